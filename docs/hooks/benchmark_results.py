"""mkdocs hook: the files of `benchmarks/results/` in the site.

- A page includes a result table with a line `<!-- benchmark result: NAME.md -->`: the file's text, its
  headings moved two levels down so that they sit under the page's own. A missing file fails the build.
- A page links to a plot as `../benchmarks/results/NAME.png`, the path that also works when GitHub shows the
  page. The site has no such parent folder, so the plots are published under `benchmarks/results/` and the
  links rewritten.
"""

import re
from pathlib import Path

from mkdocs.structure.files import File

RESULTS = "benchmarks/results"
_INCLUDE = re.compile(r"^<!-- benchmark result: ([\w.-]+\.md) -->$", re.M)
_HEADING = re.compile(r"^(#+) ", re.M)


def _root(config) -> Path:
    return Path(config["config_file_path"]).parent


def on_files(files, config):
    for plot in sorted((_root(config) / RESULTS).glob("*.png")):
        uri = f"{RESULTS}/{plot.name}"
        files.append(File(uri, src_dir=str(_root(config)), dest_dir=config["site_dir"], use_directory_urls=False))
    return files


def on_page_markdown(markdown, page, config, files):
    def include(match):
        text = (_root(config) / RESULTS / match.group(1)).read_text()
        return _HEADING.sub(lambda heading: "#" * (len(heading.group(1)) + 2) + " ", text)

    markdown = _INCLUDE.sub(include, markdown)
    up = "../" * page.file.src_uri.count("/")  # from the page's folder up to docs/
    return markdown.replace(f"](../{up}{RESULTS}/", f"]({up}{RESULTS}/")
