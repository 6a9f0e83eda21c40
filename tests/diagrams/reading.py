"""
Reading back what the diagrams wrote: DOT statements, SVG nodes, PNG pixels.

The PNG reader needs nothing but zlib: it checks the signature and every chunk's
CRC, reads IHDR, inflates the IDAT chunks and undoes the five row filters, so a
test can count the pixels of a colour.
"""

from __future__ import annotations

import re
import struct
import xml.etree.ElementTree as ET
import zlib

import attrs

# --------------------------------------------------------------------------- DOT

_ID = r'"(?:[^"\\]|\\.)*"|[^\s\[\]"=]+'
_EDGE = re.compile(rf"^\s*(?P<src>{_ID}) -> (?P<dst>{_ID})(?: \[(?P<attrs>.*)\])?$")
_NODE = re.compile(rf"^\s*(?P<name>{_ID})(?: \[(?P<attrs>.*)\])?$")
_ATTR = re.compile(rf"(?P<key>{_ID})=(?P<value>{_ID})")


def _unquote(text: str) -> str:
    if text.startswith('"') and text.endswith('"'):
        # In DOT only \" is an escape; \l and \n are the label's own line breaks.
        return text[1:-1].replace('\\"', '"')
    return text


def _attrs(text: str | None) -> dict[str, str]:
    return {_unquote(m["key"]): _unquote(m["value"]) for m in _ATTR.finditer(text or "")}


@attrs.frozen
class Dot:
    """The node and edge statements of a DOT text, attributes unquoted (line breaks ``\\l`` kept)."""

    nodes: dict[str, dict[str, str]]
    edges: dict[tuple[str, str], dict[str, str]]
    clusters: list[str]

    def label(self, source: str, dest: str) -> str:
        return self.edges[source, dest].get("label", "")


def parse_dot(text: str) -> Dot:
    nodes: dict[str, dict[str, str]] = {}
    edges: dict[tuple[str, str], dict[str, str]] = {}
    clusters: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("subgraph "):
            clusters.append(_unquote(stripped.removeprefix("subgraph ").removesuffix(" {")))
            continue
        if stripped.startswith(("graph [", "node [", "edge [", "digraph ", "}")) or not stripped:
            continue
        edge = _EDGE.match(line)
        if edge is not None:
            edges[_unquote(edge["src"]), _unquote(edge["dst"])] = _attrs(edge["attrs"])
            continue
        node = _NODE.match(line)
        if node is not None and "=" not in node["name"]:
            nodes[_unquote(node["name"])] = _attrs(node["attrs"])
    return Dot(nodes, edges, clusters)


def first_line(label: str) -> str:
    return label.split("\\l", maxsplit=1)[0]


# --------------------------------------------------------------------------- SVG

SVG = "{http://www.w3.org/2000/svg}"


def svg_nodes(data: bytes) -> dict[str, ET.Element]:
    """The ``<g class="node">`` elements of an SVG by their ``<title>`` (Graphviz writes the node id there)."""
    root = ET.fromstring(data)  # noqa: S314 - our own output
    assert root.tag == f"{SVG}svg"
    found: dict[str, ET.Element] = {}
    for g in root.iter(f"{SVG}g"):
        if g.get("class") == "node":
            title = g.find(f"{SVG}title")
            assert title is not None
            assert title.text is not None
            found[title.text] = g
    return found


def fills(node: ET.Element) -> set[str]:
    """The fill colours of a node's shapes (its outline and any inner border)."""
    return {
        shape.get("fill", "")
        for shape in node
        if shape.tag in (f"{SVG}path", f"{SVG}polygon", f"{SVG}ellipse") and shape.get("fill") not in (None, "none")
    }


# --------------------------------------------------------------------------- PNG

SIGNATURE = b"\x89PNG\r\n\x1a\n"


@attrs.frozen
class Png:
    width: int
    height: int
    channels: int
    rows: list[bytes]

    def count(self, rgb: tuple[int, int, int]) -> int:
        """How many pixels have exactly this colour (any alpha)."""
        target = bytes(rgb)
        step = self.channels
        return sum(1 for row in self.rows for i in range(0, len(row), step) if row[i : i + 3] == target)


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == SIGNATURE, f"not a PNG: starts with {data[:8]!r}"
    chunks: list[tuple[bytes, bytes]] = []
    at = 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        body = data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in chunk {kind!r}"
        chunks.append((kind, body))
        at += 12 + length
    assert chunks[0][0] == b"IHDR"
    assert chunks[-1][0] == b"IEND"
    return chunks


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk."""
    kind, body = _chunks(data)[0]
    assert kind == b"IHDR"
    width, height = struct.unpack(">II", body[:8])
    return width, height


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def read_png(data: bytes) -> Png:
    """Decode an 8-bit, non-interlaced RGB or RGBA PNG (what Graphviz's cairo renderer writes)."""
    chunks = _chunks(data)
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert depth == 8, f"bit depth {depth}"
    assert interlace == 0
    channels = {2: 3, 6: 4}[colour]
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = width * channels
    assert len(raw) == height * (stride + 1)
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                line[i] = (line[i] + _paeth(left, up, corner)) & 0xFF
            else:
                assert kind == 0, f"unknown filter {kind}"
        rows.append(bytes(line))
        previous = line
    return Png(width, height, channels, rows)


def rgb(hex_colour: str) -> tuple[int, int, int]:
    value = hex_colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)
