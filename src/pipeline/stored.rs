//! Records stored after a device's window bytes (its alarm state machines,
//! its forecast buckets): each ends with a CRC-32 of its body, the body's
//! length and a magic of its own, so each can be split off from the end,
//! and a value stored before a record existed reads as having none.

/// Close the record begun at `snap[start..]`: its CRC-32, its length and `magic`.
pub(super) fn seal(snap: &mut Vec<u8>, start: usize, magic: [u8; 4]) {
    let sum = crc32fast::hash(&snap[start..]);
    snap.extend_from_slice(&sum.to_le_bytes());
    let len = (snap.len() - start) as u32;
    snap.extend_from_slice(&len.to_le_bytes());
    snap.extend_from_slice(&magic);
}

/// Split `stored` into what precedes the record ending in `magic` and the
/// record (body and CRC), if it ends in one.
pub(super) fn split(stored: &[u8], magic: [u8; 4]) -> (&[u8], Option<&[u8]>) {
    let Some(body) = stored.strip_suffix(&magic) else { return (stored, None) };
    let Some(at) = body.len().checked_sub(4) else { return (stored, None) };
    let len = u32::from_le_bytes(body[at..].try_into().expect("4 bytes")) as usize;
    match at.checked_sub(len) {
        Some(start) => (&body[..start], Some(&body[start..at])),
        None => (stored, None),
    }
}

/// A record's body, if its CRC holds.
pub(super) fn checked(record: &[u8]) -> Option<&[u8]> {
    let (body, sum) = record.split_at_checked(record.len().checked_sub(4)?)?;
    (crc32fast::hash(body).to_le_bytes() == sum).then_some(body)
}

/// FNV-1a, stable across builds: fingerprints of what a record was made for.
pub(super) struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub(super) fn eat(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}
