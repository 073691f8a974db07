"""Bring back the photos of people listed in SOURCES.csv (the photos themselves are never committed).

For each source repository, fetch the listed commit (`git fetch --depth 1` of that exact commit, from
https://github.com/OWNER/NAME.git, or from a local bare mirror with --mirror DIR, which holds OWNER+NAME/repo or
OWNER+NAME as a git directory), read each listed path at that commit, check its sha256 against SOURCES.csv,
convert it to an RGB JPEG whose longest side is at most 400 px (as the shared pool is) and write it under --dest
as the CSV's `file` name. A photo whose sha256 (before or after conversion) is in the reserved list, or whose
ImageHash phash (or that of its mirror image) lies within Hamming distance 8 of a reserved one, is not written:
those photos are held back to measure models independently (the shared reserved-hashes.txt).

Only the Python standard library, Pillow and ImageHash, plus git on the PATH.
Usage: python data/people/fetch.py [--dest data/people/photos] [--mirror DIR] [--reserved FILE]
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
LONGEST = 400  # the shared pool's longest side
NEAR = 8  # phash Hamming distance within which a photo counts as a reserved one


def read_sources(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_reserved(path: Path) -> tuple[set[str], list]:
    """(sha256 set, phash list) from `sha256 phash` lines; # starts a comment."""
    import imagehash

    shas, hashes = set(), []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            sha, phash = line.split()[:2]
            shas.add(sha.lower())
            hashes.append(imagehash.hex_to_hash(phash))
    return shas, hashes


def source_url(repo: str, mirror: Path | None) -> str:
    """Where to fetch `repo` (OWNER/NAME) from: GitHub, or its bare mirror under `mirror`."""
    if mirror is None:
        return f"https://github.com/{repo}.git"
    base = Path(mirror) / repo.replace("/", "+")
    for candidate in (base / "repo", base, base.with_suffix(".git")):
        if (candidate / "HEAD").exists() or (candidate / ".git").exists():
            return str(candidate.resolve())
    raise FileNotFoundError(f"no mirror of {repo} under {mirror} (looked for {base}/repo and {base})")


def git(gitdir: Path, *args: str, binary: bool = False):
    out = subprocess.run(["git", f"--git-dir={gitdir}", *args], check=True, capture_output=True).stdout
    return out if binary else out.decode()


def fetch_commit(url: str, commit: str, into: Path) -> Path:
    """A bare repository in `into` holding `commit` of `url` with its trees only: a partial fetch, whose blobs
    come on demand (`prefetch`, then lazily). A local mirror is asked through an upload-pack that allows filters
    and wants by object id (a mirror may lack the repository's largest files, so a whole fetch can fail)."""
    gitdir = into / "repo.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(gitdir)], check=True)
    git(gitdir, "remote", "add", "origin", url)
    settings = [("core.repositoryformatversion", "1"), ("extensions.partialClone", "origin"),
                ("remote.origin.promisor", "true"), ("remote.origin.partialclonefilter", "blob:none")]
    if not url.startswith("https://"):
        settings.append(("remote.origin.uploadpack",
                         "git -c uploadpack.allowFilter=true -c uploadpack.allowAnySHA1InWant=true upload-pack"))
    for key, value in settings:
        git(gitdir, "config", key, value)
    git(gitdir, "fetch", "--quiet", "--depth", "1", "--no-tags", "--filter=blob:none", "origin", commit)
    return gitdir


def prefetch(gitdir: Path, commit: str, paths: list[str]) -> None:
    """Ask for the listed blobs in a few requests (a partial fetch would otherwise get them one by one)."""
    listing = git(gitdir, "ls-tree", commit, "--", *paths).splitlines()
    oids = [line.split()[2] for line in listing]
    missing = [o for o in oids if subprocess.run(["git", f"--git-dir={gitdir}", "cat-file", "-e", o],
                                                 capture_output=True).returncode != 0]
    for i in range(0, len(missing), 200):
        subprocess.run(["git", f"--git-dir={gitdir}", "fetch", "--quiet", "--no-tags", "--filter=blob:none",
                        "origin", *missing[i:i + 200]], capture_output=True)  # what is still missing comes lazily


def convert(data: bytes):
    """(RGB JPEG bytes with the longest side at most LONGEST, the PIL image written)."""
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        flat = Image.new("RGB", img.size, (255, 255, 255))
        flat.paste(img, mask=img.getchannel("A"))
        img = flat
    img = img.convert("RGB")
    scale = LONGEST / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue(), img


def reserved_reason(data: bytes, out: bytes, img, shas: set[str], hashes: list) -> str | None:
    import imagehash
    from PIL import ImageOps

    if hashlib.sha256(data).hexdigest() in shas or hashlib.sha256(out).hexdigest() in shas:
        return "its sha256 is reserved"
    mine = (imagehash.phash(img), imagehash.phash(ImageOps.mirror(img)))
    near = min((min(h - r for h in mine) for r in hashes), default=99)
    return f"its phash is {near} from a reserved one" if near <= NEAR else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sources", type=Path, default=HERE / "SOURCES.csv")
    p.add_argument("--dest", type=Path, default=HERE / "photos", help="folder the photos are written to")
    p.add_argument("--mirror", type=Path, help="clone from bare mirrors DIR/OWNER+NAME[/repo] instead of GitHub")
    p.add_argument("--reserved", type=Path, default=ROOT.parent / "shared" / "reserved-hashes.txt",
                   help="`sha256 phash` lines of the photos held back for measurement")
    p.add_argument("--repo", action="append", help="only this source repository (OWNER/NAME; repeatable)")
    args = p.parse_args(argv)

    if not args.reserved.exists():
        print(f"error: the reserved list {args.reserved} is missing; give it with --reserved FILE", file=sys.stderr)
        return 2
    shas, hashes = read_reserved(args.reserved)
    rows = [r for r in read_sources(args.sources) if not args.repo or r["repository"] in args.repo]
    by_source = defaultdict(list)
    for r in rows:
        by_source[(r["repository"], r["commit"])].append(r)
    args.dest.mkdir(parents=True, exist_ok=True)
    written, skipped = defaultdict(int), []
    for (repo, commit), items in sorted(by_source.items()):
        with tempfile.TemporaryDirectory(prefix="people-") as tmp:
            try:
                gitdir = fetch_commit(source_url(repo, args.mirror), commit, Path(tmp))
            except (subprocess.CalledProcessError, FileNotFoundError) as e:
                detail = e.stderr.decode().strip() if isinstance(e, subprocess.CalledProcessError) and e.stderr else e
                skipped += [(r["file"], f"{repo} could not be fetched: {detail}") for r in items]
                continue
            prefetch(gitdir, commit, [r["path"] for r in items])
            for r in items:
                try:
                    data = git(gitdir, "cat-file", "blob", f"{commit}:{r['path']}", binary=True)
                except subprocess.CalledProcessError:
                    skipped.append((r["file"], f"{r['path']} is not in {repo} at {commit[:12]}"))
                    continue
                if r.get("sha256") and hashlib.sha256(data).hexdigest() != r["sha256"]:
                    skipped.append((r["file"], "its bytes differ from the sha256 in SOURCES.csv"))
                    continue
                out, img = convert(data)
                why = reserved_reason(data, out, img, shas, hashes)
                if why:
                    skipped.append((r["file"], why))
                    continue
                (args.dest / r["file"]).write_bytes(out)
                written[repo] += 1
        print(f"{repo}: {written[repo]} of {len(items)} photos written", flush=True)
    for name, why in skipped:
        print(f"  skipped {name}: {why}")
    print(f"{sum(written.values())} photos of people in {args.dest}; {len(skipped)} skipped")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
