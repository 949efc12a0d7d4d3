"""Fuzzing the pod-side inspector: for any bytes, accepted with a format and size, or refused.

Hypothesis mutates real images of every format (made by qemu-img and by our producer-layout
writers) and OVAs around them: bytes overwritten where the headers, descriptors and tables
are, the object cut short or grown, magic numbers on random data. Whatever comes out, the
only allowed outcomes are a :class:`SourceImage` with a known format and a virtual size in
range, or :class:`UnsafeImage` with a one-line cause: never another exception, which the
step runner would report as an internal error and retry.

Bounded for CI by ``VDIMPORT_FUZZ_EXAMPLES`` (default 3000 per strategy, about 20 s); ``make soak``
runs it longer.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vdimport_local.diskimages import FORMATS, Partition, build_disk, convert
from vdimport_worker.imageformat import MAX_VIRTUAL_SIZE, QEMU_FORMAT, SourceImage, UnsafeImage, inspect_sources

EXAMPLES = int(os.environ.get("VDIMPORT_FUZZ_EXAMPLES", "3000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
MAGICS = [b"QFI\xfb", b"KDMV", b"conectix", b"vhdxfile", b"# Disk DescriptorFile\n", b"\x7f\x10\xda\xbe", b"LUKS\xba\xbe", b"QED\0"]


def _seeds() -> dict[str, bytes]:
    """One small image per format, and an OVA around a VMDK (built once per module)."""
    work = Path(os.environ.get("PYTEST_TMP", "/tmp")) / f"vdimport-fuzz-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    raw = build_disk(work / "seed.raw", [Partition("vfat", 2)], table="gpt")
    seeds = {fmt: convert(raw, fmt, work / f"seed-{fmt}.img").read_bytes() for fmt in FORMATS}
    seeds = {fmt: data for fmt, data in seeds.items() if len(data) <= 8 << 20}  # vhdx-hyperv stores a whole 32 MiB block
    disk = seeds["vmdk-stream"]
    listed = f"SHA256(vm.ovf)= {hashlib.sha256(b'<Envelope/>').hexdigest()}\nSHA256(vm-disk1.vmdk)= {hashlib.sha256(disk).hexdigest()}\n"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (
            ("vm.ovf", b"<Envelope/>"),
            ("vm.mf", listed.encode()),
            ("vm-disk1.vmdk", disk),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    seeds["ova"] = out.getvalue()
    return seeds


SEEDS = _seeds()


def check(data: bytes) -> None:
    """The property: the only outcomes are a usable image or a one-line cause."""
    try:
        images = inspect_sources(lambda offset, length: data[offset : offset + length], len(data))
    except UnsafeImage as exc:
        message = str(exc)
        assert message and "\n" not in message and len(message) < 600, repr(message)
        return
    assert images
    for image in images:
        assert isinstance(image, SourceImage)
        assert image.format in set(QEMU_FORMAT.values())
        assert 0 < image.virtual_size <= MAX_VIRTUAL_SIZE
        assert image.offset >= 0 and image.offset + image.length <= len(data)


# A mutation: (where, as a fraction of the first 1 MiB or of the tail, bytes to write there).
mutation = st.tuples(st.booleans(), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=16))


@FUZZ
@given(
    seed=st.sampled_from(sorted(SEEDS)),
    mutations=st.lists(mutation, min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 1 << 22)),
)
def test_mutated_images_are_accepted_or_refused(seed: str, mutations: list[tuple[bool, int, bytes]], cut: int | None) -> None:
    data = bytearray(SEEDS[seed])
    for from_end, at, value in mutations:
        where = len(data) - 1 - at % len(data) if from_end else at % len(data)
        data[where : where + len(value)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    check(bytes(data))


@FUZZ
@given(magic=st.sampled_from(MAGICS), at=st.sampled_from([0, 0x40, 512]), body=st.binary(max_size=4096), pad=st.integers(0, 1 << 20))
def test_random_bytes_behind_a_magic_number(magic: bytes, at: int, body: bytes, pad: int) -> None:
    check(b"\0" * at + magic + body + b"\0" * pad)


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_the_seeds_themselves_are_accepted(seed: str) -> None:
    """The fuzzer starts from good images (a seed that is refused would fuzz nothing)."""
    assert inspect_sources(lambda o, n: SEEDS[seed][o : o + n], len(SEEDS[seed]))


# Text VMDK descriptors: an ASCII start (what the inspector takes for a descriptor file) and
# then any text at all, the class of input that once crashed oslo's VMDK inspector.
descriptor_lines = st.lists(
    st.one_of(
        st.sampled_from(['createType="monolithicFlat"', 'RW 2048 FLAT "disk-flat.vmdk" 0', "parentCID=ffffffff", "version=1", "#DDB"]),
        st.text(max_size=80),
    ),
    max_size=40,
)


@FUZZ
@given(ascii_start=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=500, max_size=700), lines=descriptor_lines)
def test_text_descriptors(ascii_start: str, lines: list[str]) -> None:
    check(("# Disk DescriptorFile\n" + ascii_start + "\n" + "\n".join(lines)).encode("utf-8", "surrogatepass"))
