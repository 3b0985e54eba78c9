//! Fuzz target: recovery of the object log from arbitrary disk contents.
//!
//! The input is laid over a valid small log image (so the fuzzer reaches deep decoders, not
//! only the superblock check): its first bytes pick an offset and the rest overwrite the image
//! there. Opening, salvaging, reading every node and the history must never panic; damage must
//! come back as a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use xenstore_persist::{Cause, Commit, Config, Log, MemDevice, Mutation, NodeRecord};

fn base_image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let mut log = Log::create(MemDevice::new(512), Config::default()).expect("create");
        for index in 0..40u64 {
            let path = format!("/local/domain/{}/device/vif/{}", index % 4, index);
            log.append(Commit {
                cause: Cause { connection: index, requests_grouped: 1, ..Cause::default() },
                mutations: vec![
                    Mutation::PutNode {
                        path,
                        record: NodeRecord {
                            value: vec![b'v'; (index as usize) * 7],
                            permissions: b"b0\0".to_vec(),
                            generation: index,
                        },
                    },
                    Mutation::PutBlob { key: format!("conn/{index}"), value: vec![index as u8; 9] },
                ],
            })
            .expect("append");
            if index % 8 == 7 {
                log.sync().expect("sync");
            }
        }
        log.checkpoint().expect("checkpoint");
        log.sync().expect("sync");
        log.into_device().image().to_vec()
    })
}

fuzz_target!(|data: &[u8]| {
    let mut image = base_image().to_vec();
    if data.len() >= 4 {
        let offset = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize % image.len();
        let patch = &data[4..];
        let end = (offset + patch.len()).min(image.len());
        image[offset..end].copy_from_slice(&patch[..end - offset]);
    }
    for salvage in [false, true] {
        let device = MemDevice::from_image(&image);
        let opened = if salvage {
            Log::open_salvage(device, Config::default())
        } else {
            Log::open(device, Config::default())
        };
        if let Ok((mut log, _)) = opened {
            let mut count = 0usize;
            log.for_each_node(|_, record| count += record.value.len());
            log.for_each_blob(|_, blob| count += blob.len());
            if let Ok((first, last)) = log.history_range() {
                let _ = log.commits(first, last.min(first + 50));
                let _ = log.tree_at(last);
                let _ = log.diff(first, last);
            }
        }
    }
});
