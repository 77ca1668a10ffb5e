//! A reader of the BTF encoding (include/uapi/linux/btf.h) that does only what start-up needs:
//! one walk of the type section recording where each type starts, and an index of type names.
//! Types are decoded when looked up, from the bytes as read.
//!
//! It replaces a general parser (btf-rs) that decoded all ~130,000 types of a 6.x vmlinux into
//! owned values and a map of owned names: 50–75 ms of CPU to parse and 20 ms to free, on the
//! path to `attached`, for the few dozen lookups the plans make. This walk and index take a few
//! milliseconds. Every read is bounds-checked: a `--btf` file is untrusted input (the `btf` fuzz
//! target runs through here).

/// Size of `struct btf_type`: name_off, info, size/type.
const TYPE_HEADER: usize = 12;
/// BTF's magic number, as read from a little-endian file.
const MAGIC: u16 = 0xeb9f;

/// The kinds tracer tells apart (`BTF_KIND_*`).
pub(crate) mod kind {
    /// `void`, type id 0 (never encoded).
    pub(crate) const VOID: u8 = 0;
    pub(crate) const INT: u8 = 1;
    pub(crate) const PTR: u8 = 2;
    pub(crate) const ARRAY: u8 = 3;
    pub(crate) const STRUCT: u8 = 4;
    pub(crate) const UNION: u8 = 5;
    pub(crate) const ENUM: u8 = 6;
    pub(crate) const FWD: u8 = 7;
    pub(crate) const TYPEDEF: u8 = 8;
    pub(crate) const VOLATILE: u8 = 9;
    pub(crate) const CONST: u8 = 10;
    pub(crate) const RESTRICT: u8 = 11;
    pub(crate) const FUNC: u8 = 12;
    pub(crate) const FUNC_PROTO: u8 = 13;
    pub(crate) const VAR: u8 = 14;
    pub(crate) const DATASEC: u8 = 15;
    pub(crate) const FLOAT: u8 = 16;
    pub(crate) const DECL_TAG: u8 = 17;
    pub(crate) const TYPE_TAG: u8 = 18;
    pub(crate) const ENUM64: u8 = 19;
}

/// What is wrong with a BTF blob.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FormatError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("not BTF (no little-endian 0xeb9f magic)")]
    Magic,
    #[error("BTF header is truncated or its sections lie outside the data")]
    Header,
    #[error("BTF type {id} is truncated or of unknown kind {kind}")]
    Type { id: u32, kind: u8 },
    #[error("BTF type id {0} does not exist")]
    NoId(u32),
    #[error("BTF string offset {0} lies outside the string section")]
    String(u32),
}

/// One BTF blob: vmlinux's, a `--btf` file's, or a module's split BTF (whose ids and string
/// offsets continue its base's).
pub(crate) struct BtfData {
    data: Vec<u8>,
    types: std::ops::Range<usize>,
    strings: std::ops::Range<usize>,
    /// Id of the first type here: 1 for a base (0 is `void`), the base's count for split BTF.
    first_id: u32,
    /// String offsets below this are the base's.
    str_base: u32,
    /// Where each type starts in `data`, by `id - first_id`.
    starts: Vec<u32>,
    /// (hash of the name, id) of every named type, sorted: the name index.
    names: Vec<(u64, u32)>,
}

/// A type as encoded, borrowed from its blob.
#[derive(Clone, Copy)]
pub(crate) struct RawType<'a> {
    pub kind: u8,
    pub name_off: u32,
    pub vlen: u16,
    pub kind_flag: bool,
    /// `size` (INT, STRUCT, UNION, ENUM, ...) or `type` (PTR, TYPEDEF, modifiers, FUNC, ...).
    pub size_or_type: u32,
    /// What follows the header: members, enumerators, parameters.
    pub rest: &'a [u8],
}

/// The `void` type (id 0).
pub(crate) const VOID: RawType<'static> = RawType { kind: kind::VOID, name_off: 0, vlen: 0, kind_flag: false, size_or_type: 0, rest: &[] };

impl RawType<'_> {
    /// The `i`th little-endian u32 after the header.
    pub(crate) fn word(&self, i: usize) -> u32 {
        self.rest.get(i * 4..i * 4 + 4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Bytes that follow a type's header, by kind (btf.h); None for a kind this reader does not know.
const fn extra_bytes(kind: u8, vlen: usize) -> Option<usize> {
    Some(match kind {
        kind::INT | kind::VAR | kind::DECL_TAG => 4,
        kind::ARRAY => 12,
        kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => 12 * vlen,
        kind::ENUM | kind::FUNC_PROTO => 8 * vlen,
        kind::PTR | kind::FWD | kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::FUNC | kind::FLOAT | kind::TYPE_TAG => 0,
        _ => return None,
    })
}

/// FNV-1a: the name index only needs a cheap, well-spread hash of short identifiers.
fn hash(name: &[u8]) -> u64 {
    name.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

impl BtfData {
    /// A base BTF (vmlinux, a `--btf` file).
    pub(crate) fn parse(data: Vec<u8>) -> Result<Self, FormatError> {
        Self::parse_over(data, None)
    }

    /// A module's split BTF over `base`.
    pub(crate) fn parse_split(data: Vec<u8>, base: &BtfData) -> Result<Self, FormatError> {
        Self::parse_over(data, Some(base))
    }

    fn parse_over(data: Vec<u8>, base: Option<&BtfData>) -> Result<Self, FormatError> {
        if data.get(..2) != Some(&MAGIC.to_le_bytes()) {
            return Err(FormatError::Magic);
        }
        let word = |at| u32_at(&data, at).map(|w| w as usize).ok_or(FormatError::Header);
        let hdr_len = word(4)?;
        let (type_off, type_len, str_off, str_len) = (word(8)?, word(12)?, word(16)?, word(20)?);
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off).ok_or(FormatError::Header)?;
            let end = start.checked_add(len).filter(|end| *end <= data.len()).ok_or(FormatError::Header)?;
            Ok::<_, FormatError>(start..end)
        };
        let (types, strings) = (section(type_off, type_len)?, section(str_off, str_len)?);
        if hdr_len < 24 || types.end > u32::MAX as usize {
            return Err(FormatError::Header);
        }
        let (first_id, str_base) = match base {
            Some(b) => (b.first_id + b.starts.len() as u32, b.str_base + b.strings.len() as u32),
            None => (1, 0),
        };
        let mut btf = Self { data, types, strings, first_id, str_base, starts: Vec::new(), names: Vec::new() };
        btf.index()?;
        Ok(btf)
    }

    /// Walks the type section once: where each type starts, and the name index.
    fn index(&mut self) -> Result<(), FormatError> {
        let mut at = self.types.start;
        while at < self.types.end {
            let id = self.first_id.saturating_add(self.starts.len() as u32);
            let (name_off, info) = (u32_at(&self.data, at), u32_at(&self.data, at + 4));
            let (Some(name_off), Some(info)) = (name_off, info) else { return Err(FormatError::Type { id, kind: 0 }) };
            let kind = ((info >> 24) & 0x1f) as u8;
            let size = extra_bytes(kind, (info & 0xffff) as usize).ok_or(FormatError::Type { id, kind })?;
            let end = at + TYPE_HEADER + size;
            if end > self.types.end {
                return Err(FormatError::Type { id, kind });
            }
            self.starts.push(at as u32);
            // A name that cannot be read is not indexed: no lookup finds its type.
            if name_off != 0
                && let Ok(h) = self.name_bytes(name_off).map(hash)
            {
                self.names.push((h, id));
            }
            at = end;
        }
        self.names.sort_unstable();
        Ok(())
    }

    /// This blob's own string at `off` (offsets below `str_base` are the base's).
    fn name_bytes(&self, off: u32) -> Result<&[u8], FormatError> {
        let local = off.checked_sub(self.str_base).ok_or(FormatError::String(off))? as usize;
        let strings = &self.data[self.strings.clone()];
        let tail = strings.get(local..).ok_or(FormatError::String(off))?;
        let len = tail.iter().position(|b| *b == 0).ok_or(FormatError::String(off))?;
        Ok(&tail[..len])
    }

    /// The ids of this blob's own types named `name`, in id order.
    pub(crate) fn ids_named(&self, name: &str) -> Vec<u32> {
        let h = hash(name.as_bytes());
        let from = self.names.partition_point(|(k, _)| *k < h);
        self.names[from..]
            .iter()
            .take_while(|(k, _)| *k == h)
            .map(|(_, id)| *id)
            .filter(|id| self.own_type(*id).and_then(|t| self.name_bytes(t.name_off)).is_ok_and(|n| n == name.as_bytes()))
            .collect()
    }

    /// Type `id` if it is this blob's own.
    fn own_type(&self, id: u32) -> Result<RawType<'_>, FormatError> {
        let index = id.checked_sub(self.first_id).ok_or(FormatError::NoId(id))? as usize;
        let at = *self.starts.get(index).ok_or(FormatError::NoId(id))? as usize;
        // index() checked that the header and its extra bytes lie inside the type section.
        let info = u32_at(&self.data, at + 4).ok_or(FormatError::NoId(id))?;
        let kind = ((info >> 24) & 0x1f) as u8;
        let vlen = (info & 0xffff) as u16;
        let extra = extra_bytes(kind, usize::from(vlen)).ok_or(FormatError::Type { id, kind })?;
        Ok(RawType {
            kind,
            name_off: u32_at(&self.data, at).ok_or(FormatError::NoId(id))?,
            vlen,
            kind_flag: info >> 31 == 1,
            size_or_type: u32_at(&self.data, at + 8).ok_or(FormatError::NoId(id))?,
            rest: self.data.get(at + TYPE_HEADER..at + TYPE_HEADER + extra).ok_or(FormatError::NoId(id))?,
        })
    }
}

/// A blob seen with its base: ids and strings below its own resolve in the base.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub own: &'a BtfData,
    pub base: Option<&'a BtfData>,
}

impl<'a> View<'a> {
    /// Type `id` (0 is `void`).
    pub(crate) fn ty(&self, id: u32) -> Result<RawType<'a>, FormatError> {
        if id == 0 {
            return Ok(VOID);
        }
        match self.base {
            Some(base) if id < self.own.first_id => base.own_type(id),
            _ => self.own.own_type(id),
        }
    }

    /// The string at `off` (a type's or a member's name; "" for 0).
    pub(crate) fn name(&self, off: u32) -> Result<&'a str, FormatError> {
        let bytes = match self.base {
            Some(base) if off < self.own.str_base => base.name_bytes(off)?,
            _ => self.own.name_bytes(off)?,
        };
        std::str::from_utf8(bytes).map_err(|_| FormatError::String(off))
    }
}
