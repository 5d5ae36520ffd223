//! One fact about the running kernel's data layout, read from its BTF
//! (`/sys/kernel/btf/vmlinux`): where an array map's values start in its allocation.
//!
//! The flow cache's chunks are small array maps (see `lb_common::FlowCacheChunk`); the
//! kernel puts their values right after `struct bpf_array`'s header, whose size is not a
//! multiple of 64 on every kernel, so the datapath starts its entries a few bytes into the
//! value to keep each on one cache line. aya parses BTF but does not expose member
//! offsets, and only the header of the format and two kinds of record matter here, so this
//! is a small reader of its own.

use std::{path::Path, sync::OnceLock};

use thiserror::Error;

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
const BTF_MAGIC: u16 = 0xeb9f;
const CACHE_LINE: u32 = 64;

#[derive(Debug, Error)]
pub enum KernelBtfError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("BTF is malformed: {0}")]
    Malformed(&'static str),
    #[error("BTF has no struct bpf_array with a member named `value`")]
    NoArrayValue,
}

/// Bytes from the start of an array map's value to the next 64-byte boundary (0..64), on
/// the running kernel; 0 (values treated as aligned) where the kernel's BTF cannot be
/// read, with one warning: only speed depends on it.
pub fn array_value_skew() -> u32 {
    static SKEW: OnceLock<u32> = OnceLock::new();
    *SKEW.get_or_init(|| match array_value_offset(Path::new(VMLINUX_BTF)) {
        Ok(offset) => skew(offset),
        Err(error) => {
            tracing::warn!(%error, "flow-cache entries may straddle cache lines");
            0
        }
    })
}

/// Bytes from `offset` up to the next 64-byte boundary.
fn skew(offset: u32) -> u32 {
    (CACHE_LINE - offset % CACHE_LINE) % CACHE_LINE
}

/// The byte offset of `struct bpf_array`'s `value` in the BTF file at `path`.
pub fn array_value_offset(path: &Path) -> Result<u32, KernelBtfError> {
    let data = std::fs::read(path).map_err(|source| KernelBtfError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Btf::parse(&data)?.member_offset("bpf_array", "value")
}

/// Little-endian reads that fail on short input instead of panicking.
fn u32_at(data: &[u8], at: usize) -> Result<u32, KernelBtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(KernelBtfError::Malformed("truncated"))
}

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

/// A member of a struct or union: its name, type id and offset in bits.
struct Member {
    name: u32,
    type_id: u32,
    bit_offset: u32,
}

struct Type {
    name: u32,
    kind: u32,
    members: Vec<Member>,
}

struct Btf<'a> {
    strings: &'a [u8],
    /// Indexed by type id; id 0 is `void`.
    types: Vec<Type>,
}

impl<'a> Btf<'a> {
    fn parse(data: &'a [u8]) -> Result<Self, KernelBtfError> {
        let magic = data
            .get(..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or(KernelBtfError::Malformed("truncated"))?;
        if magic != BTF_MAGIC {
            return Err(KernelBtfError::Malformed("not little-endian BTF"));
        }
        let header_len = u32_at(data, 4)? as usize;
        let section = |offset_at: usize| -> Result<&'a [u8], KernelBtfError> {
            let offset = header_len + u32_at(data, offset_at)? as usize;
            let len = u32_at(data, offset_at + 4)? as usize;
            data.get(offset..offset + len)
                .ok_or(KernelBtfError::Malformed("section out of bounds"))
        };
        let (type_data, strings) = (section(8)?, section(16)?);
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            members: Vec::new(),
        }];
        let mut at = 0;
        while at < type_data.len() {
            let name = u32_at(type_data, at)?;
            let info = u32_at(type_data, at + 4)?;
            at += 12;
            let (kind, vlen, kflag) = ((info >> 24) & 0x1f, (info & 0xffff) as usize, info >> 31);
            let mut members = Vec::new();
            // Each kind's trailing data, by the kernel's BTF documentation.
            let trailing = match kind {
                1 | 14 | 17 => 4,     // INT, VAR, DECL_TAG
                3 => 12,              // ARRAY
                6 | 13 => 8 * vlen,   // ENUM, FUNC_PROTO
                15 | 19 => 12 * vlen, // DATASEC, ENUM64
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + 12 * i;
                        let offset = u32_at(type_data, m + 8)?;
                        members.push(Member {
                            name: u32_at(type_data, m)?,
                            type_id: u32_at(type_data, m + 4)?,
                            // With kflag set, the high 8 bits are a bitfield's size.
                            bit_offset: if kflag != 0 {
                                offset & 0xff_ffff
                            } else {
                                offset
                            },
                        });
                    }
                    12 * vlen
                }
                2 | 7..=12 | 16 | 18 => 0,
                _ => return Err(KernelBtfError::Malformed("unknown type kind")),
            };
            at += trailing;
            types.push(Type {
                name,
                kind,
                members,
            });
        }
        Ok(Self { strings, types })
    }

    fn name(&self, offset: u32) -> &[u8] {
        let rest = self.strings.get(offset as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|b| *b == 0).unwrap_or(rest.len())]
    }

    /// The byte offset of member `member` of struct `outer`, looking into anonymous
    /// unions and structs as C does.
    fn member_offset(&self, outer: &str, member: &str) -> Result<u32, KernelBtfError> {
        let outer = self
            .types
            .iter()
            .find(|t| t.kind == KIND_STRUCT && self.name(t.name) == outer.as_bytes())
            .ok_or(KernelBtfError::NoArrayValue)?;
        self.find_in(outer, member.as_bytes(), 0)
            .map(|bits| bits / 8)
            .ok_or(KernelBtfError::NoArrayValue)
    }

    fn find_in(&self, within: &Type, member: &[u8], base_bits: u32) -> Option<u32> {
        within.members.iter().find_map(|m| {
            let bits = base_bits + m.bit_offset;
            if self.name(m.name) == member {
                return Some(bits);
            }
            let inner = self.types.get(m.type_id as usize)?;
            let anonymous = m.name == 0 && matches!(inner.kind, KIND_STRUCT | KIND_UNION);
            anonymous
                .then(|| self.find_in(inner, member, bits))
                .flatten()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob of `int`, `union { int value; }` and `struct bpf_array { int a; int b;
    /// union; }` with the union at byte `union_at`.
    fn blob(union_at: u32) -> Vec<u8> {
        let strings = b"\0int\0value\0bpf_array\0a\0b\0".to_vec();
        let (int, value, bpf_array, a, b) = (1u32, 5u32, 11u32, 21u32, 23u32);
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        push(&[int, 1 << 24, 4, 32]); // [1] INT, 32 bits
        push(&[0, (KIND_UNION << 24) | 1, 8, value, 1, 0]); // [2] union { int value; }
        push(&[
            bpf_array,
            (KIND_STRUCT << 24) | 3,
            union_at + 8,
            a,
            1,
            0,
            b,
            1,
            32,
            0,
            2,
            union_at * 8,
        ]); // [3]
        let mut data = Vec::new();
        data.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        data.extend_from_slice(&[1, 0]);
        for w in [
            24,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            data.extend_from_slice(&w.to_le_bytes());
        }
        data.extend_from_slice(&types);
        data.extend_from_slice(&strings);
        data
    }

    #[test]
    fn finds_a_member_inside_an_anonymous_union() {
        let data = blob(312);
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(btf.member_offset("bpf_array", "value").unwrap(), 312);
        assert_eq!(btf.member_offset("bpf_array", "b").unwrap(), 4);
        assert!(btf.member_offset("bpf_array", "absent").is_err());
        assert!(btf.member_offset("bpf_map", "value").is_err());
    }

    #[test]
    fn truncated_or_foreign_input_is_an_error_not_a_panic() {
        let whole = blob(312);
        for len in 0..whole.len() {
            let _ = Btf::parse(&whole[..len]).and_then(|b| b.member_offset("bpf_array", "value"));
        }
        let mut foreign = whole.clone();
        foreign[0] = 0;
        assert!(Btf::parse(&foreign).is_err());
    }

    #[test]
    fn the_skew_reaches_the_next_cache_line() {
        assert_eq!(skew(312), 8);
        assert_eq!(skew(320), 0);
        assert_eq!(skew(257), 63);
    }

    /// The running kernel's layout, where it exports BTF (every kernel this project
    /// supports does; CI's does).
    #[test]
    fn the_running_kernel_has_an_array_value_offset() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() && std::env::var_os("CI").is_none() {
            eprintln!("skipped: {VMLINUX_BTF} is absent");
            return;
        }
        let offset = array_value_offset(path).expect("bpf_array.value in vmlinux BTF");
        // The header holds a whole struct bpf_map (well over 100 bytes) before the values.
        assert!((128..4096).contains(&offset), "offset {offset}");
        assert_eq!((offset + array_value_skew()) % 64, 0);
    }
}
