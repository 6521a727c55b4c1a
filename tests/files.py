"""Real files of every type a knowledge base takes, built in memory."""
from __future__ import annotations

import io
import json


def pdf(text: str) -> bytes:
    """A one-page PDF with `text` in Helvetica, with a correct cross-reference table."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def docx(text: str) -> bytes:
    import docx as python_docx

    document = python_docx.Document()
    document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def every_type(fact: str) -> dict[str, bytes]:
    """The same fact in each supported format."""
    return {
        "fact.txt": fact.encode(),
        "fact.md": f"# Notes\n\n{fact}\n".encode(),
        "fact.html": f"<html><head><style>p{{color:red}}</style></head><body><p>{fact}</p></body></html>".encode(),
        "fact.pdf": pdf(fact),
        "fact.docx": docx(fact),
        "fact.csv": f"topic,fact\nnotes,{fact}\n".encode(),
        "fact.json": json.dumps({"notes": {"fact": fact}}).encode(),
    }
