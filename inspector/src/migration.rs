//! Export of the node tree in the xenstore migration stream format of xen.git
//! `docs/designs/xenstore-migration.md` (version 1), so a state recovered from our log can be
//! handed to tools that read C xenstored's live-update / migration images.
//!
//! Layout written: the 16-byte header (`ident` "xenstore" and `version` 1 big-endian, `flags`
//! bit 0 = 0: the rest of the stream is little-endian), one `NODE_DATA` record per committed
//! node (conn-id 0, tx-id 0, parents before children), then `END`. Each record is
//! `type u32, len u32, body`, padded with zeros to a multiple of 8 octets.
//!
//! Connection, watch and transaction records are not written: connection state is the server's
//! own encoding in the log's state blobs, and open transactions are never persisted.

use std::fmt;

use xenstore_protocol::Permissions;

/// Stream identifier: `xenstore` in ASCII.
pub const STREAM_IDENT: u64 = 0x7865_6e73_746f_7265;
/// The version of the specification written.
pub const STREAM_VERSION: u32 = 1;
/// Record type `END`.
pub const RECORD_END: u32 = 0;
/// Record type `NODE_DATA`.
pub const RECORD_NODE_DATA: u32 = 5;

/// A node that cannot be represented in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportError {
    /// The path or value is longer than the format's 16-bit length fields allow.
    TooLong(String),
    /// The stored permissions do not parse (the log holds them in wire form).
    BadPermissions(String),
}

impl fmt::Display for ExportError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExportError::TooLong(path) => write!(formatter, "{path}: too long for the stream"),
            ExportError::BadPermissions(path) => {
                write!(formatter, "{path}: unparsable permissions")
            }
        }
    }
}

/// Builds a migration stream from nodes given in any order.
#[derive(Debug, Default)]
pub struct StreamWriter {
    records: Vec<u8>,
    node_count: usize,
}

impl StreamWriter {
    /// An empty stream (header and END are added by [`StreamWriter::finish`]).
    pub fn new() -> StreamWriter {
        StreamWriter::default()
    }

    fn push_record(&mut self, record_type: u32, body: &[u8]) {
        self.records.extend_from_slice(&record_type.to_le_bytes());
        self.records
            .extend_from_slice(&(body.len() as u32).to_le_bytes());
        self.records.extend_from_slice(body);
        let padding = (8 - body.len() % 8) % 8;
        self.records.extend(std::iter::repeat_n(0u8, padding));
    }

    /// Appends one committed node. Parents must be added before their children.
    pub fn add_node(
        &mut self,
        path: &str,
        value: &[u8],
        permissions: &[u8],
    ) -> Result<(), ExportError> {
        let permissions = Permissions::parse_wire(permissions)
            .map_err(|_| ExportError::BadPermissions(path.to_string()))?;
        let path_len =
            u16::try_from(path.len() + 1).map_err(|_| ExportError::TooLong(path.to_string()))?;
        let value_len =
            u16::try_from(value.len()).map_err(|_| ExportError::TooLong(path.to_string()))?;
        let perm_count =
            u16::try_from(permissions.len()).map_err(|_| ExportError::TooLong(path.to_string()))?;
        let mut body = Vec::with_capacity(16 + 4 * permissions.len() + path.len() + value.len());
        body.extend_from_slice(&0u32.to_le_bytes()); // conn-id: committed node
        body.extend_from_slice(&0u32.to_le_bytes()); // tx-id: ignored for committed nodes
        body.extend_from_slice(&path_len.to_le_bytes());
        body.extend_from_slice(&value_len.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes()); // access: ignored outside transactions
        body.extend_from_slice(&perm_count.to_le_bytes());
        for entry in permissions.entries() {
            body.push(entry.access.letter() as u8);
            body.push(0);
            body.extend_from_slice(&entry.domid.0.to_le_bytes());
        }
        body.extend_from_slice(path.as_bytes());
        body.push(0);
        body.extend_from_slice(value);
        self.push_record(RECORD_NODE_DATA, &body);
        self.node_count += 1;
        Ok(())
    }

    /// Number of nodes added so far.
    pub fn node_count(&self) -> usize {
        self.node_count
    }

    /// The complete stream: header, records, END.
    pub fn finish(mut self) -> Vec<u8> {
        self.push_record(RECORD_END, &[]);
        let mut stream = Vec::with_capacity(16 + self.records.len());
        stream.extend_from_slice(&STREAM_IDENT.to_be_bytes());
        stream.extend_from_slice(&STREAM_VERSION.to_be_bytes());
        stream.extend_from_slice(&0u32.to_be_bytes()); // flags: little-endian records
        stream.extend_from_slice(&self.records);
        stream
    }
}
