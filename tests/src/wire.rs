//! Wire-format helpers shared by the suites: payload builders and reply decoding.

pub use rxenstored::guest::{parse_event, show};
use xenstore_protocol::MessageType;

/// `<path>\0`.
pub fn path_payload(path: &str) -> Vec<u8> {
    let mut payload = path.as_bytes().to_vec();
    payload.push(0);
    payload
}

/// `<path>\0<value>` (WRITE).
pub fn write_payload(path: &str, value: &[u8]) -> Vec<u8> {
    let mut payload = path_payload(path);
    payload.extend_from_slice(value);
    payload
}

/// NUL-separated strings, each terminated (`a\0b\0`).
pub fn strings_payload(parts: &[&str]) -> Vec<u8> {
    let mut payload = Vec::new();
    for part in parts {
        payload.extend_from_slice(part.as_bytes());
        payload.push(0);
    }
    payload
}

/// The errno name of an error reply (`None` when `message_type` is not `XS_ERROR`).
pub fn error_name(message_type: u32, payload: &[u8]) -> Option<String> {
    (message_type == MessageType::Error.as_u32()).then(|| {
        String::from_utf8_lossy(payload)
            .trim_end_matches('\0')
            .to_string()
    })
}
