"""File bytes -> plain text -> chunks. Maintained parsers only: pypdf for PDF,
python-docx for Word, BeautifulSoup for HTML, the standard library's csv and
json. A file that cannot be read raises `UnreadableDocument` with a reason a
user can act on; it never breaks the knowledge base."""
from __future__ import annotations

import csv
import io
import json
from pathlib import PurePosixPath

SUPPORTED = {".txt": "text/plain", ".md": "text/markdown", ".html": "text/html", ".htm": "text/html",
             ".pdf": "application/pdf", ".csv": "text/csv", ".json": "application/json",
             ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document"}
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


def extract_text(name: str, data: bytes) -> str:
    suffix = file_type(name)
    if not data:
        raise UnreadableDocument("the file is empty")
    try:
        if suffix in (".txt", ".md"):
            text = _decode(data)
        elif suffix in (".html", ".htm"):
            from bs4 import BeautifulSoup

            soup = BeautifulSoup(_decode(data), "html.parser")
            for tag in soup(["script", "style", "noscript"]):
                tag.decompose()
            text = soup.get_text("\n")
        elif suffix == ".pdf":
            from pypdf import PdfReader

            reader = PdfReader(io.BytesIO(data))
            text = "\n\n".join(page.extract_text() or "" for page in reader.pages)
        elif suffix == ".docx":
            import docx

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
