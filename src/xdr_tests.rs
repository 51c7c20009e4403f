//! Unit tests of `xdr.rs`.

use super::*;

fn round_trip<T: Pack + Unpack + PartialEq + std::fmt::Debug>(v: T, bytes: &[u8]) {
    assert_eq!(to_bytes(&v).unwrap(), bytes, "encoding of {v:?}");
    assert_eq!(from_bytes::<T>(bytes).unwrap(), v);
}

#[test]
fn primitives_are_big_endian_words() {
    round_trip(-2i32, &[0xff, 0xff, 0xff, 0xfe]);
    round_trip(0x2000_8086u32, &[0x20, 0x00, 0x80, 0x86]);
    round_trip(-1i64, &[0xff; 8]);
    round_trip(9_000_000u64, &[0, 0, 0, 0, 0, 0x89, 0x54, 0x40]);
    round_trip(1.5f64, &[0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
    round_trip(true, &[0, 0, 0, 1]);
    round_trip((), &[]);
    round_trip([7u8; 3], &[7, 7, 7, 0]);
}

#[test]
fn narrow_types_take_a_word_and_keep_its_low_bits() {
    round_trip(5u8, &[0, 0, 0, 5]);
    round_trip(-3i16, &[0xff, 0xff, 0xff, 0xfd]);
    round_trip(65535u16, &[0, 0, 0xff, 0xff]);
    round_trip(-1i8, &[0xff, 0xff, 0xff, 0xff]);
    // An unsigned-char peer sends 0xc3 as 195: the same byte.
    assert_eq!(from_bytes::<i8>(&[0, 0, 0, 0xc3]).unwrap(), -61);
    // Out of range: libtirpc's cast keeps the low bits.
    assert_eq!(from_bytes::<u8>(&[0, 0, 1, 0]).unwrap(), 0);
    assert_eq!(from_bytes::<u8>(&[0x12, 0x34, 0x56, 0x78]).unwrap(), 0x78);
    assert_eq!(from_bytes::<i8>(&[0, 0, 1, 0x80]).unwrap(), -128);
    assert_eq!(from_bytes::<u16>(&[0, 1, 0, 2]).unwrap(), 2);
    assert_eq!(from_bytes::<i16>(&[0, 0, 0x80, 0]).unwrap(), i16::MIN);
    assert_eq!(from_bytes::<i16>(&[0x7f, 0xff, 0xff, 0xff]).unwrap(), -1);
}

#[test]
fn any_non_zero_bool_is_true() {
    assert!(!from_bytes::<bool>(&[0, 0, 0, 0]).unwrap());
    assert!(from_bytes::<bool>(&[0, 0, 0, 2]).unwrap());
    // go-libvirt's CONNECT_OPEN flag: the byte array 01 00 00, padded.
    assert!(from_bytes::<bool>(&[1, 0, 0, 0]).unwrap());
    assert!(from_bytes::<bool>(&[0xff; 4]).unwrap());
    // What we send stays canonical.
    assert_eq!(to_bytes(&true).unwrap(), [0, 0, 0, 1]);
}

#[test]
fn any_non_zero_option_flag_means_present() {
    for flag in [[0, 0, 0, 1], [0, 0, 0, 3], [1, 0, 0, 0], [0x80, 0, 0, 0]] {
        let mut bytes = flag.to_vec();
        bytes.extend_from_slice(&[0, 0, 0, 7]);
        let mut r = Reader::new(&bytes);
        assert_eq!(r.option(u32::unpack).unwrap(), Some(7), "flag {flag:02x?}");
        r.finish().unwrap();
    }
    assert_eq!(
        Reader::new(&[0, 0, 0, 0]).option(u32::unpack).unwrap(),
        None
    );
    // A present flag with nothing behind it is still truncated.
    assert!(matches!(
        Reader::new(&[1, 0, 0, 0]).option(u32::unpack),
        Err(XdrError::Truncated { .. })
    ));
}

#[test]
fn strings_are_padded_and_bounded() {
    let mut out = Vec::new();
    put_string(&mut out, "abcde", 10).unwrap();
    assert_eq!(out, [0, 0, 0, 5, b'a', b'b', b'c', b'd', b'e', 0, 0, 0]);
    let mut r = Reader::new(&out);
    assert_eq!(r.string(10).unwrap(), "abcde");
    r.finish().unwrap();

    assert_eq!(
        put_string(&mut Vec::new(), "abcde", 4),
        Err(XdrError::TooLong { max: 4, got: 5 })
    );
    assert_eq!(
        Reader::new(&out).string(4),
        Err(XdrError::TooLong { max: 4, got: 5 })
    );
}

#[test]
fn pad_bytes_are_not_checked() {
    let bytes = [0, 0, 0, 1, b'x', 9, 9, 9];
    assert_eq!(Reader::new(&bytes).string(8).unwrap(), "x");
}

#[test]
fn invalid_utf8_is_refused() {
    let bytes = [0, 0, 0, 2, 0xc3, 0x28, 0, 0];
    assert_eq!(Reader::new(&bytes).string(8), Err(XdrError::InvalidUtf8));
}

#[test]
fn a_string_ends_at_its_first_nul() {
    let bytes = [
        0, 0, 0, 6, b'v', b'm', b'1', 0, b'x', b'y', 0, 0, 0, 0, 0, 9,
    ];
    let mut r = Reader::new(&bytes);
    assert_eq!(r.string(8).unwrap(), "vm1");
    // The whole wire length was consumed.
    assert_eq!(u32::unpack(&mut r).unwrap(), 9);
    r.finish().unwrap();
    // What C never sees is not checked.
    let bytes = [0, 0, 0, 4, b'a', 0, 0xc3, 0x28];
    assert_eq!(Reader::new(&bytes).string(8).unwrap(), "a");
    assert_eq!(
        Reader::new(&[0, 0, 0, 1, 0, 0, 0, 0]).string(8).unwrap(),
        ""
    );
    // The limit still applies to the length on the wire.
    let bytes = [0, 0, 0, 5, b'a', 0, b'b', b'c', b'd', 0, 0, 0];
    assert!(matches!(
        Reader::new(&bytes).string(4),
        Err(XdrError::TooLong { max: 4, got: 5 })
    ));
    // Opaque data keeps every byte.
    let bytes = [0, 0, 0, 3, b'a', 0, b'b', 0];
    assert_eq!(Reader::new(&bytes).opaque_var(8).unwrap(), b"a\0b");
}

#[test]
fn huge_string_length_fails_before_allocating() {
    // Claims 4 GiB - 1 bytes with 8 bytes of input behind it.
    let bytes = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];
    assert!(matches!(
        Reader::new(&bytes).string(u32::MAX),
        Err(XdrError::Truncated { .. })
    ));
    assert!(matches!(
        Reader::new(&bytes).opaque_var(u32::MAX),
        Err(XdrError::Truncated { .. })
    ));
    assert!(matches!(
        Reader::new(&bytes).string(4_194_304),
        Err(XdrError::TooLong { .. })
    ));
}

#[test]
fn array_count_is_checked_against_limit_and_input() {
    let bytes = [0x80, 0, 0, 0, 0, 0, 0, 1];
    let res = Reader::new(&bytes).array_var(u32::MAX, 4, i32::unpack);
    assert_eq!(
        res,
        Err(XdrError::Truncated {
            offset: 4,
            needed: 1 << 33,
            remaining: 4
        })
    );
    let res = Reader::new(&bytes).array_var(16384, 4, i32::unpack);
    assert_eq!(
        res,
        Err(XdrError::TooLong {
            max: 16384,
            got: 1 << 31
        })
    );

    let ok = [0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
    assert_eq!(
        Reader::new(&ok).array_var(2, 4, i32::unpack).unwrap(),
        vec![1, 2]
    );
    assert!(matches!(
        Reader::new(&ok).array_var(1, 4, i32::unpack),
        Err(XdrError::TooLong { .. })
    ));
}

#[test]
fn fixed_arrays_and_options() {
    let mut out = Vec::new();
    put_array_fixed(&mut out, &[1i8, 2], |out, v| v.pack(out)).unwrap();
    put_option(&mut out, Some(&7u32), |out, v| v.pack(out)).unwrap();
    put_option::<u32>(&mut out, None, |out, v| v.pack(out)).unwrap();
    assert_eq!(
        out,
        [0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 0]
    );
    let mut r = Reader::new(&out);
    assert_eq!(r.array_fixed::<i8, 2>(4, i8::unpack).unwrap(), [1, 2]);
    assert_eq!(r.option(u32::unpack).unwrap(), Some(7));
    assert_eq!(r.option(u32::unpack).unwrap(), None);
    r.finish().unwrap();
    assert!(matches!(
        Reader::new(&out[..4]).array_fixed::<i8, 2>(4, i8::unpack),
        Err(XdrError::Truncated { .. })
    ));
}

#[test]
fn truncated_and_trailing_input() {
    assert_eq!(
        from_bytes::<u64>(&[0, 0, 0, 1]),
        Err(XdrError::Truncated {
            offset: 0,
            needed: 8,
            remaining: 4
        })
    );
    assert_eq!(
        from_bytes::<u32>(&[0, 0, 0, 1, 0]),
        Err(XdrError::TrailingBytes(1))
    );
    // A payload may carry more than its value, whole words or not.
    assert_eq!(from_payload::<u32>(&[0, 0, 0, 1, 0]), Ok(1));
    assert_eq!(from_payload::<()>(&[1, 2, 3, 4, 5, 6, 7, 8]), Ok(()));
    assert!(matches!(
        from_payload::<u64>(&[0, 0, 0, 1]),
        Err(XdrError::Truncated { .. })
    ));
    // A string whose padding is missing is truncated too.
    assert!(matches!(
        Reader::new(&[0, 0, 0, 1, b'x']).string(8),
        Err(XdrError::Truncated { .. })
    ));
}
