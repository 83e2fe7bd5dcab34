"""Issue 26 §3: one chunked file hashing (ytmt.fileio.file_digest) for every caller."""

import hashlib

from ytmt.fileio import file_digest


def test_file_digest_is_hashlib_s_over_chunks_and_reports_every_byte(tmp_path):
    data = bytes(range(256)) * 5000  # 1.28 MB: several 64 KiB chunks
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    seen: list[int] = []
    assert file_digest(path, "md5", seen.append, chunk=1 << 16) == hashlib.md5(data).hexdigest()
    assert sum(seen) == len(data) and len(seen) == -(-len(data) // (1 << 16))
    assert file_digest(path) == hashlib.sha256(data).hexdigest()


def test_no_other_module_hashes_files_by_itself():
    """The chunk loop lives in ytmt.fileio only (download and synthesis call it)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "ytmt"
    chunk_hash = re.compile(r"while (\w+) := \w+\.read\([^\n]*\n\s+\w+\.update\(\1\)")
    loops = [p.relative_to(root).as_posix() for p in root.rglob("*.py")
             if chunk_hash.search(p.read_text())]
    assert loops == ["fileio.py"]
