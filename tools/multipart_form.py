"""multipart_form.py — a multipart/form-data body for the project's Python
HTTP clients (bench/finetune_latency.py, bench/soak.py,
tests/openapi/conformance.py): text fields and image files in one request,
as POST /v1/finetunes and POST /v1/edits take them."""
import io
import uuid


def multipart(fields, files):
    """(body, Content-Type) for text fields {name: value} and files
    [(field, filename, bytes)], each file sent as image/png."""
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for field, filename, data in files:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                  f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"
