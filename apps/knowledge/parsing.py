"""File bytes -> plain text -> chunks. Maintained parsers only: pypdf for PDF,
python-docx for Word, BeautifulSoup for HTML, the standard library's csv and
json. A file that cannot be read raises `UnreadableDocument` with a reason a
user can act on; it never breaks the knowledge base."""
from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import PurePosixPath

SUPPORTED = {".txt": "text/plain", ".md": "text/markdown", ".html": "text/html", ".htm": "text/html",
             ".pdf": "application/pdf", ".csv": "text/csv", ".json": "application/json",
             ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document"}
# A .docx is a zip and python-docx reads every part into memory: a zip bomb (a small file
# that declares gigabytes) is refused from its central directory before anything is inflated.
# zipfile never inflates a member past its declared size, so the declared sizes are a bound.
MAX_UNZIPPED_BYTES = 100 * 1024 * 1024
MAX_ZIP_MEMBERS = 5000
CHUNK_CHARS = 800
OVERLAP_CHARS = 120


class UnreadableDocument(Exception):
    pass


def file_type(name: str) -> str:
    """The extension we parse by, or UnreadableDocument for a type we do not take."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in SUPPORTED:
        raise UnreadableDocument(f"unsupported file type {suffix or '(none)'}; "
                                 f"use one of {', '.join(sorted(SUPPORTED))}")
    return suffix


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableDocument("the file is not UTF-8 text") from exc


def _check_zip(data: bytes) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise UnreadableDocument(f"the DOCX file is not a valid zip archive ({exc})") from exc
    declared = sum(member.file_size for member in members)
    if len(members) > MAX_ZIP_MEMBERS or declared > MAX_UNZIPPED_BYTES:
        raise UnreadableDocument(f"the DOCX file would expand to {declared:,} bytes in {len(members)} parts; "
                                 f"the limit is {MAX_UNZIPPED_BYTES:,} bytes and {MAX_ZIP_MEMBERS} parts")


def extract_text(name: str, data: bytes) -> str:
    suffix = file_type(name)
    if not data:
        raise UnreadableDocument("the file is empty")
    try:
        if suffix in (".txt", ".md"):
            text = _decode(data)
        elif suffix in (".html", ".htm"):
            from bs4 import BeautifulSoup  # import-time cost: each format's parser loads for its format

            soup = BeautifulSoup(_decode(data), "html.parser")
            for tag in soup(["script", "style", "noscript"]):
                tag.decompose()
            text = soup.get_text("\n")
        elif suffix == ".pdf":
            from pypdf import PdfReader  # import-time cost (see .html)

            reader = PdfReader(io.BytesIO(data))
            text = "\n\n".join(page.extract_text() or "" for page in reader.pages)
        elif suffix == ".docx":
            import docx  # import-time cost (see .html)

            _check_zip(data)
            document = docx.Document(io.BytesIO(data))
            text = "\n\n".join(p.text for p in document.paragraphs)
        elif suffix == ".csv":
            rows = list(csv.reader(io.StringIO(_decode(data))))
            header, body = (rows[0], rows[1:]) if rows else ([], [])
            text = "\n".join("; ".join(f"{h}: {v}" for h, v in zip(header, row)) for row in body) or "\n".join(header)
        else:  # .json
            text = json.dumps(json.loads(_decode(data)), indent=1, ensure_ascii=False)
    except UnreadableDocument:
        raise
    except Exception as exc:  # a parser's own error: a corrupt or mislabelled file
        raise UnreadableDocument(f"could not read the {suffix[1:].upper()} file: {exc.__class__.__name__}: "
                                 f"{str(exc)[:200]}") from exc
    text = "\n".join(line.rstrip() for line in text.replace("\x00", "").splitlines()).strip()
    if not text:
        raise UnreadableDocument("no text could be extracted from the file")
    return text


def chunk_text(text: str, size: int = CHUNK_CHARS, overlap: int = OVERLAP_CHARS) -> list[str]:
    """Paragraph-aware chunks of about `size` characters; a paragraph longer than
    that is cut with `overlap` characters carried into the next chunk."""
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    chunks: list[str] = []
    current = ""
    for paragraph in paragraphs:
        while len(paragraph) > size:
            if current:
                chunks.append(current)
                current = ""
            cut = paragraph.rfind(" ", 0, size)
            cut = cut if cut > size // 2 else size
            chunks.append(paragraph[:cut].strip())
            paragraph = paragraph[max(cut - overlap, 1):].strip()
        if current and len(current) + len(paragraph) + 2 > size:
            chunks.append(current)
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
    if current:
        chunks.append(current)
    return chunks
