#!/usr/bin/env bash
# Build the evaluation corpus ("Copyright does not exist", Debian package cfi-en 3.0-10.2): the
# text of html/ch1web.htm .. ch17web.htm in order (HTML parsed with character references
# converted; title/script/style skipped; block tags break lines; whitespace collapsed; no space
# before , . ; : ! ?; "( " and " )" tightened; empty and "INDEX" lines dropped; lines joined by a
# blank line, one final newline). Check: 496,156 characters, SHA-256 below. Cached.
#
#   scripts/fetch-corpus.sh        # idempotent: does nothing when the cached corpus checks out
#
# Output: $TENPAK_MODELS/corpus/cfi-en.txt (default <repo>/models, git-ignored).
# Needs: python3; the .deb comes from `apt-get download` or, without apt, straight from the
# Debian mirror; it is unpacked with dpkg-deb, or with ar + tar where dpkg is missing.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dest=${TENPAK_MODELS:-$repo/models}/corpus
out=$dest/cfi-en.txt
want=a852cb9d158908ccb39f03d5ea48ab4af6d0217d1d75b35a631545cccda603f7
deb_sha=a080fc8f3b1a36c645b22f769fec4acc2f0cded42bcc5d5865c846845c897da2
deb_url=https://deb.debian.org/debian/pool/main/c/cfi/cfi-en_3.0-10.2_all.deb

if [ -f "$out" ] && [ "$(sha256sum "$out" | cut -d' ' -f1)" = "$want" ]; then
  echo "corpus present: $out"
  exit 0
fi
mkdir -p "$dest"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! (command -v apt-get >/dev/null && apt-get download cfi-en=3.0-10.2 >/dev/null 2>&1); then
  python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
    "$deb_url" cfi-en_3.0-10.2_all.deb
fi
deb=$(ls cfi-en_*.deb)
got=$(sha256sum "$deb" | cut -d' ' -f1)
if [ "$got" != "$deb_sha" ]; then
  echo "error: $deb: SHA-256 $got, expected $deb_sha" >&2
  exit 1
fi
if command -v dpkg-deb >/dev/null; then
  dpkg-deb -x "$deb" pkg
else
  mkdir pkg && (cd pkg && ar x "../$deb" && tar -xf data.tar.*)
fi
python3 - pkg/usr/share/doc/cfi-en/html "$work/corpus.txt" <<'PY'
import html.parser, os, re, sys
src, dst = sys.argv[1], sys.argv[2]
BREAKS = {"p", "br", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "tr", "table",
          "blockquote", "hr", "title", "ul", "ol", "dd", "dt"}
SKIP = {"title", "script", "style"}

class Text(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.skip = [], 0
    def handle_starttag(self, tag, attrs):
        if tag in SKIP:
            self.skip += 1
        if tag in BREAKS:
            self.parts.append("\n")
    def handle_endtag(self, tag):
        if tag in SKIP and self.skip:
            self.skip -= 1
        if tag in BREAKS:
            self.parts.append("\n")
    def handle_data(self, data):
        if not self.skip:
            self.parts.append(re.sub(r"\s+", " ", data))

chapters = []
for i in range(1, 18):
    p = Text()
    with open(os.path.join(src, f"ch{i}web.htm"), encoding="ascii") as f:
        p.feed(f.read())
    p.close()
    lines = []
    for line in "".join(p.parts).split("\n"):
        line = re.sub(r"\s+", " ", line).strip()
        line = re.sub(r" ([,.;:!?])", r"\1", line)
        line = line.replace("( ", "(").replace(" )", ")")
        if line and line != "INDEX":
            lines.append(line)
    chapters.append(lines)
text = "\n\n".join(l for ch in chapters for l in ch) + "\n"
with open(dst, "w", encoding="utf-8", newline="") as f:
    f.write(text)
print(f"{len(text)} characters, {len(text.encode())} bytes, {len(text.split())} words")
PY
got=$(sha256sum corpus.txt | cut -d' ' -f1)
if [ "$got" != "$want" ]; then
  echo "error: the corpus built has SHA-256 $got, expected $want" >&2
  exit 1
fi
mv corpus.txt "$out"
echo "corpus written: $out"
