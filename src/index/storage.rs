//! Where an index's bytes live: a mapping of the file, or a buffer in this process's
//! memory (an index compiled in memory by `serve -f`); and writing a compiled index
//! to its file. The only I/O of the index layer; everything else works on `&[u8]`.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use std::io::{BufWriter, Write};

use super::format::{self, IndexError, Section, SectionId};

/// The bytes of an index.
pub enum Storage {
    Mapped(memmap2::Mmap),
    Owned(rkyv::util::AlignedVec<16>),
}

impl Storage {
    /// Map an index file read-only.
    pub fn map(path: &Path) -> Result<Storage, IndexError> {
        let io = |source| IndexError::Io {
            file: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: a shared, read-only mapping. The bytes can change under us only if
        // another process writes or truncates the file in place, which the operator
        // must not do to a served index (README, "Replacing index files"); `compile`
        // writes a new file and renames it.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Ok(Storage::Mapped(map))
    }

    /// Copy bytes compiled in memory into a 16-aligned buffer (rkyv and the DFA need
    /// aligned sections).
    pub fn copy_of(bytes: &[u8]) -> Storage {
        let mut v = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        v.extend_from_slice(bytes);
        Storage::Owned(v)
    }
}

impl AsRef<[u8]> for Storage {
    fn as_ref(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A section of the storage that owns a handle to it, for structures (the fsts) that
/// want their bytes without a lifetime.
#[derive(Clone)]
pub struct Bytes {
    storage: Arc<Storage>,
    range: Range<usize>,
}

impl Bytes {
    pub fn new(storage: Arc<Storage>, range: Range<usize>) -> Bytes {
        Bytes { storage, range }
    }

    /// Where these bytes lie in the whole index.
    pub fn range(&self) -> Range<usize> {
        self.range.clone()
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        (*self.storage)
            .as_ref()
            .get(self.range.clone())
            .unwrap_or(&[])
    }
}

/// Write an index file atomically: a temporary file in the same directory, synced,
/// then renamed over `out`.
pub fn write_atomically(out: &Path, sections: &[(SectionId, Section)]) -> Result<u64, IndexError> {
    let err = |source| IndexError::Io {
        file: out.to_path_buf(),
        source,
    };
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let file = std::fs::File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let refs: Vec<(SectionId, &[u8])> =
            sections.iter().map(|(id, b)| (*id, b.as_ref())).collect();
        let len = format::write(&mut w, &refs)?;
        w.flush()?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, out)?;
        Ok(len)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}
