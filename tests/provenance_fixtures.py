"""Builders for provenance test files: EXIF, XMP, PNG text, C2PA and watermarked images.

Everything is made here, offline: a throwaway CA and signing certificate for C2PA, XMP packets,
and Stable Diffusion's invisible watermark (with invisible-watermark's own encoder when it is
installed, else a line-for-line port of it that the tests check against the library).
"""

from __future__ import annotations

import datetime
import io
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

IPTC_TYPES = "http://cv.iptc.org/newscodes/digitalsourcetype/"
TRAINED = IPTC_TYPES + "trainedAlgorithmicMedia"

# Stable Diffusion's watermark payloads (see fakescope.provenance.watermark for where they come from).
SD1_PAYLOAD = b"StableDiffusionV1"
SDXL_BITS = [int(b) for b in bin(0b101100111110110010010000011110111011000110011110)[2:]]


def textured_image(size: int = 512, seed: int = 0) -> Image.Image:
    """A textured RGB image: a random colour field (detail every few pixels) and a little noise.

    Chroma detail matters: the dwtDct watermark holds where each 4x4 block of the U channel's
    approximation band has a clear largest coefficient, and fades on smooth gradients.
    """
    rng = np.random.default_rng(seed)
    cell = 4
    coarse = rng.integers(30, 226, (size // cell + 2, size // cell + 2, 3)).astype(np.uint8)
    field = Image.fromarray(coarse).resize((size + 2 * cell, size + 2 * cell), Image.BICUBIC)
    pixels = np.asarray(field.crop((0, 0, size, size)), dtype=np.float64)
    pixels += rng.normal(0, 3, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


# --------------------------------------------------------------------------------------------
# EXIF, XMP and PNG text
# --------------------------------------------------------------------------------------------


def jpeg_with_exif(path: Path, img: Image.Image, tags: dict[int, object], user_comment=None):
    """Save ``img`` as JPEG with the given IFD0 tags and an optional Exif-IFD UserComment."""
    exif = Image.Exif()
    for tag, value in tags.items():
        exif[tag] = value
    if user_comment is not None:
        exif.get_ifd(0x8769)[0x9286] = user_comment
    img.save(path, "JPEG", quality=92, exif=exif.tobytes())
    return path


def xmp_packet(
    digital_source_type: str | None = None,
    creator_tool: str | None = None,
    history_agent: str | None = None,
    as_attributes: bool = False,
) -> bytes:
    """An XMP packet with IPTC DigitalSourceType, CreatorTool and an edit-history agent."""
    attributes, elements = [], []
    if digital_source_type and as_attributes:
        attributes.append(f'Iptc4xmpExt:DigitalSourceType="{digital_source_type}"')
    elif digital_source_type:
        elements.append(
            f"<Iptc4xmpExt:DigitalSourceType>{digital_source_type}</Iptc4xmpExt:DigitalSourceType>"
        )
    if creator_tool:
        attributes.append(f'xmp:CreatorTool="{creator_tool}"')
    if history_agent:
        elements.append(
            "<xmpMM:History><rdf:Seq><rdf:li rdf:parseType='Resource'>"
            "<stEvt:action>created</stEvt:action>"
            f"<stEvt:softwareAgent>{history_agent}</stEvt:softwareAgent>"
            "</rdf:li></rdf:Seq></xmpMM:History>"
        )
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about=""'
        ' xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
        ' xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
        ' xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"'
        ' xmlns:stEvt="http://ns.adobe.com/xap/1.0/sType/ResourceEvent#" '
        + " ".join(attributes)
        + ">"
        + "".join(elements)
        + "</rdf:Description></rdf:RDF></x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    ).encode("utf-8")


def jpeg_with_xmp(path: Path, img: Image.Image, packet: bytes) -> Path:
    """Save ``img`` as JPEG with ``packet`` in an APP1 XMP segment right after SOI.

    Written by hand because Pillow only gained an ``xmp`` save option for JPEG in 11.0.
    """
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=92)
    data = buffer.getvalue()
    body = b"http://ns.adobe.com/xap/1.0/\x00" + packet
    segment = b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
    path.write_bytes(data[:2] + segment + data[2:])
    return path


def png_with_text(path: Path, img: Image.Image, chunks: dict[str, str], itxt=()) -> Path:
    """Save ``img`` as PNG with tEXt chunks (and iTXt for the keys in ``itxt``)."""
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        if key in itxt:
            info.add_itxt(key, value)
        else:
            info.add_text(key, value)
    img.save(path, "PNG", pnginfo=info)
    return path


# --------------------------------------------------------------------------------------------
# C2PA
# --------------------------------------------------------------------------------------------


@dataclass
class TestSigner:
    """A throwaway signing identity: the chain (end entity, then CA) and key, in PEM."""

    chain_pem: bytes
    key_pem: bytes
    ca_pem: bytes

    __test__ = False  # not a pytest test class


def make_test_signer() -> TestSigner:
    """An ES256 CA and an end-entity certificate with the profile c2pa-rs accepts.

    c2pa-rs refuses self-signed signing certificates, so this is a two-level chain. The end
    entity is a v3 certificate with keyUsage digitalSignature (critical), an extended key usage
    C2PA allows (emailProtection), basicConstraints CA=false, and subject and authority key
    identifiers.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common_name: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fakescope tests"),
            ]
        )

    def usage(**flags: bool) -> x509.KeyUsage:
        names = [
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ]
        return x509.KeyUsage(**{n: flags.get(n, False) for n in names})

    def builder(subject: str, issuer: x509.Name, key) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        builder("fakescope test CA", name("fakescope test CA"), ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        builder("fakescope test signer", ca.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return TestSigner(
        chain_pem=cert.public_bytes(pem) + ca.public_bytes(pem),
        key_pem=key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        ca_pem=ca.public_bytes(pem),
    )


def c2pa_manifest(digital_source_type: str, generator: str = "fakescope-test-generator") -> dict:
    """A manifest definition with one ``c2pa.created`` action of the given source type."""
    return {
        "claim_generator_info": [{"name": generator, "version": "1.0"}],
        "title": "fixture",
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": digital_source_type,
                            "softwareAgent": {"name": "Some Image Model"},
                        }
                    ]
                },
            }
        ],
    }


def c2pa_sign(
    path: Path,
    img: Image.Image,
    fmt: str,
    manifest: dict,
    signer: TestSigner,
    remote_url: str | None = None,
) -> Path:
    """Save ``img`` in ``fmt`` (``"JPEG"`` or ``"PNG"``) and sign it with c2pa-python's Builder.

    With ``remote_url``, the manifest is not embedded; the file only points at that URL.
    """
    import c2pa

    mime = {"JPEG": "image/jpeg", "PNG": "image/png"}[fmt]
    source = io.BytesIO()
    img.save(source, fmt)
    source.seek(0)
    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, signer.chain_pem, signer.key_pem, None)
    dest = io.BytesIO()
    with c2pa.Signer.from_info(info) as c2pa_signer, c2pa.Builder(manifest) as builder:
        if remote_url is not None:
            builder.set_no_embed()
            builder.set_remote_url(remote_url)
        builder.sign(c2pa_signer, mime, source, dest)
    path.write_bytes(dest.getvalue())
    return path


# --------------------------------------------------------------------------------------------
# Stable Diffusion's invisible watermark
# --------------------------------------------------------------------------------------------


def sd_watermark(img: Image.Image, bits_or_bytes, channel_order: str = "BGR") -> Image.Image:
    """Embed a dwtDct watermark the way the Stable Diffusion reference code does.

    ``channel_order="BGR"`` is CompVis/Stability's ``put_watermark`` (RGB converted to BGR for
    the encoder); ``"RGB"`` is diffusers' SDXL watermarker, which hands the encoder RGB as is.
    """
    rgb = np.asarray(img.convert("RGB"))
    pixels = np.ascontiguousarray(rgb[:, :, ::-1] if channel_order == "BGR" else rgb)
    if isinstance(bits_or_bytes, bytes):
        bits = list(np.unpackbits(np.frombuffer(bits_or_bytes, dtype=np.uint8)))
    else:
        bits = [int(b) for b in bits_or_bytes]
    try:
        from imwatermark import WatermarkEncoder
    except ImportError:
        encoded = embed_dwtdct_port(pixels, bits)
    else:
        encoder = WatermarkEncoder()
        encoder.set_watermark("bits", bits)
        encoded = encoder.encode(pixels, "dwtDct")
    out = encoded[:, :, ::-1] if channel_order == "BGR" else encoded
    return Image.fromarray(np.ascontiguousarray(out))


def embed_dwtdct_port(pixels: np.ndarray, bits: list[int], scale: float = 36.0) -> np.ndarray:
    """invisible-watermark 0.2.0's ``EmbedMaxDct.encode`` (default scales), for when it is absent.

    Kept line for line, including the library's swap of the horizontal and vertical detail
    bands on reconstruction; a test checks it against the library when the library is present.
    """
    import cv2
    import pywt

    rows, cols = pixels.shape[0] // 4 * 4, pixels.shape[1] // 4 * 4
    yuv = cv2.cvtColor(pixels, cv2.COLOR_BGR2YUV)
    approx, (h1, v1, d1) = pywt.dwt2(yuv[:rows, :cols, 1], "haar")
    num = 0
    for i in range(approx.shape[0] // 4):
        for j in range(approx.shape[1] // 4):
            block = approx[i * 4 : i * 4 + 4, j * 4 : j * 4 + 4]
            bit = bits[num % len(bits)]
            pos = int(np.argmax(abs(block.flatten()[1:]))) + 1
            r, c = pos // 4, pos % 4
            val = block[r][c]
            sign = 1.0 if val >= 0.0 else -1.0
            block[r][c] = sign * (abs(val) // scale + 0.25 + 0.5 * bit) * scale
            num += 1
    yuv[:rows, :cols, 1] = pywt.idwt2((approx, (v1, h1, d1)), "haar")
    return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR)
