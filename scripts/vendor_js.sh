#!/usr/bin/env bash
# Refresh the JavaScript the rendered book needs offline (run by `make vendor`; needs npm and a registry).
#
# Jupyter Book 1.x loads MathJax, require.js and the Jupyter widget manager from public CDNs by default,
# so a book opened from disk (or behind a firewall) shows raw TeX and no widgets. We keep a minimal copy in
# vendor/ (NOT _static/: see _config.yml) and point `mathjax_path` / `nb_ipywidgets_js` at it.
#
#   vendor/mathjax/        MathJax 3.2.2: tex-mml-chtml.js, TeX extensions (autoloaded), CHTML woff-v2 fonts, LICENSE
#   vendor/requirejs/      require.js 2.3.8 (MIT: the file header + the MIT text in LICENSE)
#   vendor/html-manager/   @jupyter-widgets/html-manager 1.0.15: dist/embed-amd.js + its Font Awesome files, LICENSE
#                          + offline-shim.js (ours, kept as is)
#
# Versions are pinned: mathjax@3 would resolve to 3.2.2 today, but `latest` is 4.x which the config does not
# support, so the exact versions are named.
set -euo pipefail

MATHJAX_VERSION=3.2.2
REQUIREJS_VERSION=2.3.8
HTML_MANAGER_VERSION=1.0.15

root="$(cd "$(dirname "$0")/.." && pwd)"
vendor="$root/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

command -v npm >/dev/null || { echo "vendor_js.sh: npm is needed (apt-get install npm)" >&2; exit 1; }

cd "$work"
npm pack --silent "mathjax@$MATHJAX_VERSION" "requirejs@$REQUIREJS_VERSION" \
    "@jupyter-widgets/html-manager@$HTML_MANAGER_VERSION" >/dev/null
for t in *.tgz; do mkdir -p "${t%.tgz}" && tar xzf "$t" -C "${t%.tgz}"; done
mj="$work/mathjax-$MATHJAX_VERSION/package"
rq="$work/requirejs-$REQUIREJS_VERSION/package"
hm="$work/jupyter-widgets-html-manager-$HTML_MANAGER_VERSION/package"
for d in "$mj" "$rq" "$hm"; do [ -d "$d" ] || { echo "vendor_js.sh: expected $d after npm pack" >&2; exit 1; }; done

# Replace the vendored trees wholesale (so files dropped upstream do not linger); our own files
# (vendor/html-manager/offline-shim.js, vendor/custom.css) are left alone.
rm -rf "$vendor/mathjax" "$vendor/requirejs"
find "$vendor/html-manager" -type f ! -name offline-shim.js -delete 2>/dev/null || true
mkdir -p "$vendor/mathjax/input/tex" "$vendor/mathjax/output/chtml/fonts" \
         "$vendor/requirejs" "$vendor/html-manager"

# MathJax: only the combined component, the TeX extensions it autoloads (\cancel, \boldsymbol, ...) and
# the CHTML fonts; the rest of the package serves the accessibility/speech menu and is 4x larger.
# The layout below es5/ is kept because MathJax finds its parts relative to tex-mml-chtml.js.
cp "$mj/es5/tex-mml-chtml.js" "$vendor/mathjax/"
cp -r "$mj/es5/input/tex/extensions" "$vendor/mathjax/input/tex/"
cp -r "$mj/es5/output/chtml/fonts/woff-v2" "$vendor/mathjax/output/chtml/fonts/"
cp "$mj/LICENSE" "$vendor/mathjax/LICENSE"

# require.js: the licence text is in the file header; keep a LICENSE beside it anyway.
cp "$rq/require.js" "$vendor/requirejs/"
if [ -f "$rq/LICENSE" ]; then cp "$rq/LICENSE" "$vendor/requirejs/LICENSE"; else
  { sed -n '1,/\*\//p' "$rq/require.js"; cat <<'LIC'

The MIT License, as the header above states (https://github.com/requirejs/requirejs/blob/master/LICENSE):

Copyright jQuery Foundation and other contributors, https://jquery.org/

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction, including
without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the
following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial
portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT
LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO
EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER
IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR
THE USE OR OTHER DEALINGS IN THE SOFTWARE.
LIC
  } > "$vendor/requirejs/LICENSE"
fi

# html-manager: the AMD bundle and the Font Awesome files it references relative to itself.
cp "$hm/dist/embed-amd.js" "$vendor/html-manager/"
for f in "$hm"/dist/*.woff2 "$hm"/dist/*.woff "$hm"/dist/*.ttf "$hm"/dist/*.eot "$hm"/dist/*.svg; do
  if [ -e "$f" ]; then cp "$f" "$vendor/html-manager/"; fi
done
# The npm package ships no LICENSE file; package.json says BSD-3-Clause, the licence of the ipywidgets
# repository it is built from (Project Jupyter). Write that text, and the notices of what the bundle contains.
cat > "$vendor/html-manager/LICENSE" <<'LIC'
@jupyter-widgets/html-manager (https://github.com/jupyter-widgets/ipywidgets), licensed BSD-3-Clause:

Copyright (c) 2015 Project Jupyter Contributors
All rights reserved.

Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this
   list of conditions and the following disclaimer.

2. Redistributions in binary form must reproduce the above copyright notice,
   this list of conditions and the following disclaimer in the documentation
   and/or other materials provided with the distribution.

3. Neither the name of the copyright holder nor the names of its
   contributors may be used to endorse or promote products derived from
   this software without specific prior written permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE
FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY,
OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.

The *.woff2/*.woff/*.ttf/*.eot/*.svg files beside embed-amd.js are Font Awesome Free 5.15.4
(https://fontawesome.com/license/free): fonts SIL OFL 1.1, icons CC BY 4.0, code MIT.
Other libraries bundled into embed-amd.js are listed in THIRD-PARTY-NOTICES.txt.
LIC
cp "$hm/dist/embed.js.LICENSE.txt" "$vendor/html-manager/THIRD-PARTY-NOTICES.txt"

cat > "$vendor/VERSIONS" <<VERS
mathjax $MATHJAX_VERSION (Apache-2.0, vendor/mathjax/LICENSE)
requirejs $REQUIREJS_VERSION (MIT, vendor/requirejs/LICENSE)
@jupyter-widgets/html-manager $HTML_MANAGER_VERSION (BSD-3-Clause, vendor/html-manager/LICENSE; bundles Font Awesome Free: fonts OFL-1.1, code MIT, icons CC-BY-4.0)
VERS
echo "vendor/ refreshed: $(find "$vendor" -type f | wc -l) files, $(du -sh "$vendor" | cut -f1)"
