//! The Confluent wire format: magic byte 0, the schema id as 4 big-endian bytes, then the
//! Avro binary datum.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("payload shorter than the 5-byte Confluent header")]
    TooShort,
    #[error("unknown magic byte {0} (expected 0)")]
    BadMagic(u8),
}

pub fn frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + datum.len());
    out.push(0u8);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

/// Splits a framed payload into its schema id and Avro datum.
pub fn unframe(bytes: &[u8]) -> Result<(u32, &[u8]), WireError> {
    if bytes.len() < 5 {
        return Err(WireError::TooShort);
    }
    if bytes[0] != 0 {
        return Err(WireError::BadMagic(bytes[0]));
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[5..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_unframes() {
        let f = frame(258, b"abc");
        assert_eq!(&f[..5], &[0, 0, 0, 1, 2]);
        assert_eq!(unframe(&f).unwrap(), (258, &b"abc"[..]));
        assert_eq!(unframe(&[1, 0, 0, 0, 0]), Err(WireError::BadMagic(1)));
        assert_eq!(unframe(&[0, 0]), Err(WireError::TooShort));
    }
}
