//! Where an index's bytes live, and writing a compiled index to its file: the only
//! I/O of the index layer; everything else works on `&[u8]`.
//!
//! A served index must never change under the server: an operator's `cp new old`,
//! `rsync --inplace` or `truncate` rewrites the file in place, and a plain mapping of
//! it would then serve a mix of two indexes or die of `SIGBUS` when its pages vanish.
//! So an index is held in one of two ways ([`IndexMode`]), and either way the bytes
//! checked at open are the bytes served until a reload has checked new ones:
//!
//! - **read** (default): the file is read into this process's own memory (with
//!   transparent huge pages where the kernel offers them, which also spares the TLB
//!   on random lookups). Costs memory equal to the file, and the time to read it.
//! - **map**: the file is copied to a new file that is unlinked at once (next to the
//!   original, so a filesystem with reflinks copies nothing), and that private copy
//!   is mapped. For indexes larger than memory: pages come from disk as needed.
//!   Costs disk space equal to the file, and the copy.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use super::format::{self, IndexError, Section, SectionId};

/// How an index file is held while it is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IndexMode {
    /// Read into this process's memory.
    #[default]
    Read,
    /// Map a private, unlinked copy of the file.
    Map,
}

/// The bytes of an index.
pub enum Storage {
    /// A read-only mapping: anonymous memory the file was read into, or a private
    /// copy of the file that no other process can reach.
    Mapped(memmap2::Mmap),
    /// A buffer compiled in memory.
    Owned(rkyv::util::AlignedVec<16>),
}

impl Storage {
    /// Load an index file as `mode` says.
    pub fn load(path: &Path, mode: IndexMode) -> Result<Storage, IndexError> {
        let io = |source| IndexError::Io {
            file: path.to_path_buf(),
            source,
        };
        match mode {
            IndexMode::Read => read_into_memory(path).map_err(io),
            IndexMode::Map => map_private_copy(path).map_err(io),
        }
    }

    /// Copy bytes compiled in memory into a 16-aligned buffer (rkyv and the DFA need
    /// aligned sections).
    pub fn copy_of(bytes: &[u8]) -> Storage {
        let mut v = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        v.extend_from_slice(bytes);
        Storage::Owned(v)
    }
}

/// Read the whole file into anonymous memory (page-aligned, so every section keeps
/// its alignment), one slice per core: the cost is page faults and copying, both of
/// which spread over cores. A file that shrinks while it is read fails here; one
/// rewritten while it is read fails its checksums at open.
fn read_into_memory(path: &Path) -> std::io::Result<Storage> {
    use std::os::unix::fs::FileExt;
    let file = File::open(path)?;
    let len = usize::try_from(file.metadata()?.len()).map_err(std::io::Error::other)?;
    if len == 0 {
        return Ok(Storage::copy_of(&[]));
    }
    let mut map = memmap2::MmapOptions::new().len(len).map_anon()?;
    // Huge pages: fewer faults while reading, fewer TLB misses while serving. Only
    // advice: where the kernel has none to give, small pages serve as well.
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage);
    const PIECE: usize = 16 << 20;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(len.div_ceil(PIECE))
        .max(1);
    let per = len.div_ceil(threads).div_ceil(PIECE) * PIECE;
    std::thread::scope(|scope| {
        let readers: Vec<_> = map
            .chunks_mut(per)
            .enumerate()
            .map(|(i, part)| {
                let file = &file;
                scope.spawn(move || file.read_exact_at(part, (i * per) as u64))
            })
            .collect();
        readers.into_iter().try_for_each(|r| {
            r.join()
                .unwrap_or_else(|_| Err(std::io::Error::other("a reader thread failed")))
        })
    })?;
    Ok(Storage::Mapped(map.make_read_only()?))
}

/// Copy the file to a new file that is unlinked as soon as it exists, then map the
/// copy: no other process can reach it, so nothing can change or truncate it under
/// the mapping.
fn map_private_copy(path: &Path) -> std::io::Result<Storage> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut src = File::open(path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp_name = format!(
        ".{name}.served-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let beside = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(&tmp_name);
    let create = |p: &Path| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(p)
            .map(|f| (f, p.to_path_buf()))
    };
    // Next to the file (same filesystem: a reflink where it can), else the temp dir.
    let (mut copy, copy_path) =
        create(&beside).or_else(|_| create(&std::env::temp_dir().join(&tmp_name)))?;
    std::fs::remove_file(&copy_path)?;
    std::io::copy(&mut src, &mut copy)?;
    // SAFETY: the copy is unlinked and only this process holds it open, so no other
    // process can write to or truncate it while it is mapped.
    let map = unsafe { memmap2::Mmap::map(&copy) }?;
    Ok(Storage::Mapped(map))
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
