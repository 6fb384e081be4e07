#!/usr/bin/env python3
"""Appends a custom section to a WebAssembly module.

    wasm-add-section.py IN.wasm NAME PAYLOAD_FILE OUT.wasm [--json]

Writes OUT.wasm: IN.wasm's bytes followed by one custom section (id 0, the
LEB128 size of what follows, the LEB128 length of NAME, NAME in UTF-8, then
the payload). With --json the payload must parse as JSON and is written
compact (no spaces, one line), as the Rust SDK writes `palisade.manifest`.

What it deliberately does not do: replace or remove a section. It refuses a
module that already has a custom section of that name, so running it twice on
its own output is an error instead of a second, ignored manifest.
"""

import json
import sys


def leb128(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_leb128(data, i):
    value = shift = 0
    while True:
        if i >= len(data):
            raise ValueError("truncated LEB128 at byte %d" % i)
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def custom_sections(module):
    """The module's custom sections as (name, payload) pairs, in order,
    checking section framing."""
    if module[:4] != b"\0asm" or len(module) < 8:
        raise ValueError("not a WebAssembly module")
    sections = []
    i = 8
    while i < len(module):
        section_id = module[i]
        size, start = read_leb128(module, i + 1)
        end = start + size
        if end > len(module):
            raise ValueError("section %d at byte %d runs past the end" % (section_id, i))
        if section_id == 0:
            length, at = read_leb128(module, start)
            sections.append((module[at : at + length].decode("utf-8"), module[at + length : end]))
        i = end
    return sections


def main(argv):
    args = [a for a in argv if a != "--json"]
    if len(args) != 4:
        sys.exit("usage: wasm-add-section.py IN.wasm NAME PAYLOAD_FILE OUT.wasm [--json]")
    src, name, payload_file, dst = args
    with open(src, "rb") as f:
        module = f.read()
    with open(payload_file, "rb") as f:
        payload = f.read()
    if "--json" in argv:
        try:
            value = json.loads(payload)
        except ValueError as e:
            sys.exit("%s: not JSON: %s" % (payload_file, e))
        payload = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    try:
        names = [n for n, _ in custom_sections(module)]
    except ValueError as e:
        sys.exit("%s: %s" % (src, e))
    if name in names:
        sys.exit("%s already has a custom section %r" % (src, name))
    encoded = name.encode("utf-8")
    body = leb128(len(encoded)) + encoded + payload
    with open(dst, "wb") as f:
        f.write(module + b"\0" + leb128(len(body)) + body)


if __name__ == "__main__":
    main(sys.argv[1:])
