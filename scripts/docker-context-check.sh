#!/usr/bin/env bash
# Checks docker/Dockerfile's build context (the repository root) against .dockerignore, without
# Docker: ./scripts/docker-context-check.sh (from any directory; CI runs it).
#
#   - computes the context the way Docker does (moby/patternmatcher, the rules .dockerignore's
#     header describes: Go filepath.Match globs relative to the context root, `**` for any
#     number of directories, `!` re-includes, the last matching line wins, a matched directory
#     excludes everything under it)
#   - fails if anything under data/, target/, .git/, a .venv*, a real configuration or another
#     secret is in it; probes data/acct.json, target/x and .venv/x are created when absent (and
#     removed again) so the rules are exercised on real files, and paths that are not on disk
#     (config/config.json, server/target/…, *.redb, …) are checked against the rules directly
#   - fails if something the image build needs is not in it: Cargo.toml, Cargo.lock, every
#     tracked file of every workspace member (cargo loads them all, even for -p business2api),
#     every include_str!/include_bytes! target of their sources, and every context file a
#     COPY/ADD of docker/Dockerfile names
#
# When a Docker daemon answers (`docker info`), the context is also sent to it once
# (FROM scratch, COPY . /ctx, docker export) and its file list compared with the computed one.
# DOCKER_CONTEXT_CHECK_DOCKER=0 skips that; =1 makes a missing daemon an error.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

command -v python3 >/dev/null 2>&1 || { echo "error: python3 is needed" >&2; exit 1; }
if [[ ! -f .dockerignore ]]; then
    echo "error: no .dockerignore at $ROOT (the build context)" >&2
    exit 1
fi

# --- Probes: created only when absent, removed on exit -----------------------------------------
created_files=()
created_dirs=()
cleanup() {
    local f d i
    for f in "${created_files[@]+"${created_files[@]}"}"; do rm -f -- "$f"; done
    # Deepest first.
    for ((i = ${#created_dirs[@]} - 1; i >= 0; i--)); do
        d=${created_dirs[$i]}
        rmdir -- "$d" 2>/dev/null || true
    done
    if [[ -n ${docker_tmp:-} ]]; then rm -rf -- "$docker_tmp"; fi
}
trap cleanup EXIT

probe() { # <path relative to the root>
    local path=$1 dir
    [[ -e $path ]] && return
    dir=$(dirname -- "$path")
    if [[ ! -d $dir ]]; then
        mkdir -p -- "$dir"
        created_dirs+=("$dir")
    fi
    printf '{"probe": "scripts/docker-context-check.sh: must never reach a build"}\n' >"$path"
    created_files+=("$path")
}
PROBES=(data/acct.json target/x .venv/x)
for p in "${PROBES[@]}"; do probe "$p"; done

# --- The context, computed ---------------------------------------------------------------------
context_list=$(mktemp)
created_files+=("$context_list")

python3 - "$context_list" "${PROBES[@]}" <<'PY'
import os
import re
import subprocess
import sys

out_path, probes = sys.argv[1], sys.argv[2:]
problems = []


# .dockerignore, read as BuildKit's dockerignore.ReadAll does.
def read_dockerignore(path):
    patterns = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f.read().splitlines()):
            if i == 0:
                line = line.lstrip("\ufeff")
            if line.startswith("#"):
                continue
            line = line.strip()
            if not line:
                continue
            invert = line.startswith("!")
            if invert:
                line = line[1:].strip()
            if line:
                line = os.path.normpath(line)  # filepath.Clean
                if len(line) > 1 and line.startswith("/"):
                    line = line[1:]
                if line.startswith("//"):
                    line = line.lstrip("/")
            patterns.append((invert, line))
    return patterns


# A pattern as moby/patternmatcher compiles it.
def compile_pattern(pattern):
    rx = "^"
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 2
                if i < n and pattern[i] == "/":
                    i += 1
                rx += ".*" if i >= n else "(.*/)?"
                continue
            rx += "[^/]*"
        elif ch == "?":
            rx += "[^/]"
        elif ch in ".+()|{}$":
            rx += "\\" + ch
        elif ch == "\\":
            if i + 1 < n:
                i += 1
                rx += "\\" + pattern[i]
            else:
                rx += "\\\\"
        elif ch == "[":
            # A Go character class: [^…] or [!…] negates.
            j = pattern.find("]", i + 1)
            if j < 0:
                raise SystemExit(f"error: .dockerignore: unterminated [ in {pattern!r}")
            body = pattern[i + 1 : j]
            if body.startswith("!"):
                body = "^" + body[1:]
            rx += "[" + body + "]"
            i = j
        else:
            rx += re.escape(ch)
        i += 1
    return re.compile(rx + "$")


PATTERNS = [(invert, compile_pattern(p), p) for invert, p in read_dockerignore(".dockerignore")]
EXCEPTIONS = [p for invert, _, p in PATTERNS if invert]


def excluded(path):
    """patternmatcher.MatchesOrParentMatches: a pattern matches the path or one of its parents;
    the last matching pattern decides."""
    parents = path.split("/")[:-1]
    matched = False
    for invert, rx, _ in PATTERNS:
        if invert != matched:
            continue
        hit = rx.match(path) is not None
        if not hit:
            hit = any(rx.match("/".join(parents[: i + 1])) for i in range(len(parents)))
        if hit:
            matched = not invert
    return matched


def may_reinclude_under(directory):
    """Whether a `!` pattern could match something under an excluded directory (then it must be
    walked, as BuildKit does; otherwise it is skipped whole)."""
    for p in EXCEPTIONS:
        literal = []  # the pattern's directories before its first glob
        for part in p.split("/"):
            if re.search(r"[*?\[\\]", part):
                break
            literal.append(part)
        if not literal:
            return True  # starts with a glob: could match anywhere
        prefix = "/".join(literal)
        if (
            prefix == directory
            or prefix.startswith(directory + "/")
            or directory.startswith(prefix + "/")
        ):
            return True
    return False


context = []
for dirpath, dirnames, filenames in os.walk(".", followlinks=False):
    rel_dir = os.path.relpath(dirpath, ".")
    rel_dir = "" if rel_dir == "." else rel_dir
    keep = []
    for d in sorted(dirnames):
        rel = f"{rel_dir}/{d}" if rel_dir else d
        if os.path.islink(os.path.join(dirpath, d)):
            filenames.append(d)  # a symlink is copied as a link
        elif not excluded(rel) or may_reinclude_under(rel):
            keep.append(d)
    dirnames[:] = keep
    for f in sorted(filenames):
        rel = f"{rel_dir}/{f}" if rel_dir else f
        if not excluded(rel):
            context.append(rel)
context.sort()
in_context = set(context)

# --- Nothing secret or bulky -------------------------------------------------------------------
FORBIDDEN_PREFIXES = ("data/", "target/", ".git/", "docker/config/")
for path in context:
    parts = path.split("/")
    if (
        path.startswith(FORBIDDEN_PREFIXES)
        or any(
            p.startswith(".venv") or p in ("target", "node_modules", "__pycache__")
            for p in parts[:-1]
        )
        or path.endswith(".redb")
        or parts[-1] in ("api_key", "thinking-signing.key")
        or (
            path.startswith("config/")
            and not (path.endswith(".example.json") or path == "config/README.md")
        )
    ):
        problems.append(f"in the build context but must not be: {path}")
for p in probes:
    if p in in_context or not excluded(p):
        problems.append(f"probe {p} is in the build context")
# Paths that need not exist here: the rules alone must keep them out.
WOULD_BE_SECRET = [
    "data/business2api.redb",
    "data/api_key",
    "data/thinking-signing.key",
    "data/accounts/a@example.com.json",
    "data-old/acct.json",
    "config/config.json",
    "config/prod.json",
    "docker/config/server.json",
    "accounts.json",
    "server/target/debug/business2api",
    "tests/sdk/.venv/bin/python",
    ".venv-legacy/bin/python",
    ".git/config",
    "bench/out/report.json",
    "business2api.redb",
    ".env",
    "tests/node_modules/x/index.js",
]
for p in WOULD_BE_SECRET:
    if not excluded(p):
        problems.append(f".dockerignore does not exclude {p}")

# --- Everything the build needs ----------------------------------------------------------------
def tracked(*paths):
    r = subprocess.run(
        ["git", "ls-files", "-z", "--", *paths], capture_output=True, text=True, check=False
    )
    if r.returncode != 0:
        return None
    return [p for p in r.stdout.split("\0") if p]


def workspace_members():
    text = open("Cargo.toml", encoding="utf-8").read()
    try:
        import tomllib

        return tomllib.loads(text)["workspace"]["members"]
    except ImportError:
        m = re.search(r"^members\s*=\s*\[(.*?)\]", text, re.S | re.M)
        return re.findall(r'"([^"]+)"', m.group(1)) if m else []


needed = {"Cargo.toml": "the workspace manifest", "Cargo.lock": "cargo build --locked"}
for extra in ("rust-toolchain", "rust-toolchain.toml", ".cargo/config", ".cargo/config.toml"):
    if os.path.isfile(extra):
        needed[extra] = "cargo configuration"
members = workspace_members()
if not members:
    problems.append("could not read the workspace members from Cargo.toml")
for member in members:
    files = tracked(member)
    if files is None:  # not a git checkout: the member's manifest and sources on disk
        files = [f"{member}/Cargo.toml"]
        for dirpath, _, filenames in os.walk(os.path.join(member, "src")):
            files += [os.path.join(dirpath, f) for f in filenames]
    for f in files:
        needed.setdefault(f, f"workspace member {member}")
INCLUDE = re.compile(r'include_(?:str|bytes)!\(\s*"([^"]+)"\s*\)')
for f in [f for f in needed if f.endswith(".rs")]:
    try:
        src = open(f, encoding="utf-8").read()
    except OSError:
        continue
    for target in INCLUDE.findall(src):
        path = os.path.relpath(os.path.normpath(os.path.join(os.path.dirname(f), target)))
        needed.setdefault(path, f"include_str!/include_bytes! in {f}")

# COPY/ADD sources of docker/Dockerfile (not --from=…: those come from a stage).
dockerfile = open("docker/Dockerfile", encoding="utf-8").read().replace("\\\n", " ")
for line in dockerfile.splitlines():
    words = line.split()
    if not words or words[0].upper() not in ("COPY", "ADD"):
        continue
    args = [w for w in words[1:] if not w.startswith("--")]
    if any(w.startswith("--from") for w in words[1:]) or len(args) < 2:
        continue
    for src in args[:-1]:
        src = os.path.normpath(src)
        if src == ".":
            continue  # the whole context: covered by the members above
        if any(c in src for c in "*?["):
            problems.append(f"docker/Dockerfile: COPY {src}: a glob is not checked; name the file")
        else:
            needed.setdefault(src, "a COPY in docker/Dockerfile")

for path, why in sorted(needed.items()):
    if not os.path.lexists(path) and why.startswith("workspace member"):
        continue  # tracked but deleted in this working tree: not .dockerignore's business
    if not os.path.exists(path):
        problems.append(f"needed by the build ({why}) but missing on disk: {path}")
    elif os.path.isdir(path):
        if not any(c == path or c.startswith(path + "/") for c in context):
            problems.append(f"needed by the build ({why}) but not in the context: {path}/")
    elif path not in in_context:
        problems.append(f"needed by the build ({why}) but excluded by .dockerignore: {path}")

with open(out_path, "w", encoding="utf-8") as f:
    f.write("".join(p + "\n" for p in context))

size = sum(os.path.getsize(p) for p in context if os.path.isfile(p))
print(
    f"docker build context: {len(context)} files, {size / 1e6:.1f} MB; "
    f"{len(needed)} needed by the build; "
    f"{len(probes) + len(WOULD_BE_SECRET)} secret/output paths excluded"
)
if problems:
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    sys.exit(1)
PY

# --- Optionally, the same context as a Docker daemon sees it ----------------------------------
want_docker=${DOCKER_CONTEXT_CHECK_DOCKER:-auto}
if [[ $want_docker != 0 ]]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        docker_tmp=$(mktemp -d)
        tag=business2api-context-check:$$
        # A Dockerfile outside the context (stdin) so that .dockerignore at the root applies, as it
        # does for docker/Dockerfile. FROM scratch: nothing to pull.
        printf 'FROM scratch\nCOPY . /ctx\n' \
            | docker build -q -t "$tag" -f - . >/dev/null
        cid=$(docker create "$tag" /none)
        docker export "$cid" >"$docker_tmp/fs.tar"
        docker rm -f "$cid" >/dev/null
        docker rmi -f "$tag" >/dev/null
        python3 - "$docker_tmp/fs.tar" "$context_list" <<'PY'
import sys
import tarfile

with tarfile.open(sys.argv[1]) as t:
    names = [
        (m.name[2:] if m.name.startswith("./") else m.name.lstrip("/"), m)
        for m in t.getmembers()
        if m.isfile() or m.issym() or m.islnk()
    ]
    seen = {name[len("ctx/"):] for name, _ in names if name.startswith("ctx/")}
want = set(open(sys.argv[2], encoding="utf-8").read().split("\n")) - {""}
only_docker, only_here = sorted(seen - want), sorted(want - seen)
for p in only_docker:
    print(f"error: Docker's context has {p}, the computed one does not", file=sys.stderr)
for p in only_here:
    print(f"error: the computed context has {p}, Docker's does not", file=sys.stderr)
if only_docker or only_here:
    sys.exit(1)
print(f"docker build agrees: {len(seen)} files")
PY
    elif [[ $want_docker == 1 ]]; then
        echo "error: DOCKER_CONTEXT_CHECK_DOCKER=1 but no Docker daemon answers (docker info)" >&2
        exit 1
    else
        echo "no Docker daemon: checked the .dockerignore rules only"
    fi
fi
