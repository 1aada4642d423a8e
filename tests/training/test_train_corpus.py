"""`acepilot train corpus` on small repositories made here: filters, exact and
near duplicates, secret scrubbing, the split by repository, the HumanEval-X
leak refusal, tokens packed with EOS, FIM, licences, commits, versions."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest

from acepilot.training.config import ConfigError, configure
from acepilot.training.corpus.build import CorpusConfig, build_corpus
from acepilot.training.corpus.sources import CorpusError

REPO_ROOT = Path(__file__).resolve().parents[2]
# CI lays shared/ beside the clone; a developer checkout has it at the same place.
EVAL_DATA = Path(
    os.environ.get("ACEPILOT_HUMANEVAL_X", REPO_ROOT.parent / "shared" / "data" / "humaneval-x")
)
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
PASSWORD = "s3cr3tP@ssw0rd123"
KEY_BODY = "MIIEpAIBAAKCAQEAwJ8hZq3kV9yTq0ZyExampleKeyBodyLine"
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "theta",
    "kappa",
    "lambda",
    "sigma",
    "omega",
    "vector",
    "matrix",
    "buffer",
    "parser",
    "token",
    "stream",
    "socket",
    "client",
    "server",
    "window",
    "render",
    "widget",
    "layout",
    "style",
]


def code(seed: int, language: str = "python", lines: int = 30) -> str:
    """Plausible, distinct source text: near-duplicates only where a test makes them."""
    rng = random.Random(seed)
    out = []
    for i in range(lines):
        a, b, c = (rng.choice(WORDS) for _ in range(3))
        n = rng.randint(0, 999)
        if language == "python":
            out.append(f"def {a}_{b}_{i}(x, y={n}):\n    return x * {n} + len('{c}') - y\n")
        else:
            out.append(
                f"export function {a}_{b}_{i}(x: number): number {{ return x * {n} + {len(c)}; }}\n"
            )
    return "".join(out)


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def git_init(root: Path) -> str:
    def run(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True)
        return done.stdout.strip()

    run("init", "-q", "-b", "main")
    run("add", "-A")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    return run("rev-parse", "HEAD")


def make_tokenizer(path: Path) -> Path:
    """A byte-level BPE with CodeGen's EOS and the StarCoder FIM sentinels."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(
        [code(i) for i in range(20)] + [code(i, "ts") for i in range(20)], trainer
    )
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def leaked_problem() -> str:
    with gzip.open(EVAL_DATA / "humaneval_python.jsonl.gz", "rt") as f:
        problem = json.loads(f.readline())
    return "# copied from somewhere\n" + problem["prompt"] + problem["canonical_solution"]


@pytest.fixture()
def repos(tmp_path: Path) -> dict[str, Path]:
    main_py = code(1)
    near = main_py.replace("def ", "def  ", 1).replace("return x", "return 2 * x", 1)
    alpha = write(
        tmp_path / "alpha",
        {
            "LICENSE": "MIT License\n\nPermission is hereby granted, free of charge, to any person",
            "src/App.vue": "<template>\n  <div>{{ msg }}</div>\n</template>\n<script>\n"
            + code(2, "ts")
            + "</script>\n",
            "src/util.ts": code(3, "ts"),
            "src/main.py": main_py,
            "src/settings.py": code(4, lines=8)
            + f'AWS_ACCESS_KEY_ID = "{AWS_KEY}"\ndb_password = "{PASSWORD}"\n'
            + f'DEPLOY_KEY = """-----BEGIN RSA PRIVATE KEY-----\n{KEY_BODY}\n-----END RSA PRIVATE KEY-----"""\n',
            "node_modules/lib/index.js": code(5, "ts"),
            "dist/app.js": code(6, "ts"),
            "static/jquery.min.js": code(7, "ts"),
            "package-lock.json": '{"lockfileVersion": 3}\n' * 5,
            "src/blob.js": "var data = '" + "x1" * 3000 + "';\n",
            "src/table.py": "T = [\n" + "    ('-', '+', '|', '*', '/', '=', '~'),\n" * 40 + "]\n",
            "src/pb2.py": "# Code generated by protoc. DO NOT EDIT.\n" + code(8),
            "src/tiny.py": "x = 1\n",
            "src/blob.py": b"\x89PNG\r\n\x1a\n\x00\x00\x00" + bytes(range(256)),
            "README.md": "# alpha\n" * 20,
        },
    )
    beta = write(
        tmp_path / "beta",
        {
            "LICENSE.txt": "                                 Apache License\n"
            "                           Version 2.0, January 2004\n",
            "lib/util_copy.ts": code(3, "ts"),  # exact duplicate of alpha's
            "lib/main_near.py": near,  # near duplicate of alpha's
            "lib/own.py": code(9),
            "lib/problem.py": leaked_problem(),
        },
    )
    gamma = write(
        tmp_path / "gamma",  # a plain directory, not a git checkout
        {f"pkg/mod{i}.py": code(20 + i) for i in range(3)} | {"pkg/view.vue": code(30, "ts")},
    )
    delta = write(tmp_path / "delta", {"x/one.ts": code(40, "ts"), "x/two.py": code(41)})
    for root in (alpha, beta, delta):
        git_init(root)
    return {"alpha": alpha, "beta": beta, "gamma": gamma, "delta": delta}


def config_for(
    repos: dict[str, Path], tokenizer_dir: Path, out: Path, **kw: object
) -> CorpusConfig:
    settings = dict(
        sources=[str(repos["alpha"]), str(repos["beta"]), str(repos["gamma"])],
        out_dir=str(out),
        tokenizer=str(tokenizer_dir),
        eval_data=str(EVAL_DATA),
        eval_leak="drop",
        validation_repos=["gamma"],
        seq_len=64,
        progress=False,
        clone_dir=str(out / "clones"),
    )
    settings.update(kw)
    return CorpusConfig(**settings)  # type: ignore[arg-type]


def every_output_byte(out: Path, tokenizer_dir: Path) -> str:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    texts = []
    for path in out.rglob("*"):
        if path.suffix == ".npy":
            texts.append(tok.decode(np.load(path).reshape(-1).tolist()))
        elif path.suffix == ".gz":
            texts.append(gzip.decompress(path.read_bytes()).decode())
        elif path.is_file():
            texts.append(path.read_text())
    return "\n".join(texts)


def test_corpus_filters_dedup_scrub_split_and_pack(
    repos: dict[str, Path], tokenizer_dir: Path, tmp_path: Path
) -> None:
    out = build_corpus(config_for(repos, tokenizer_dir, tmp_path / "out"))
    assert out == tmp_path / "out" / "corpus" / "v1"
    manifest = json.loads((out / "manifest.json").read_text())
    filters = manifest["filters"]
    for reason in (
        "vendored",
        "build_output",
        "minified",
        "lock_file",
        "long_lines",
        "low_alnum",
        "generated",
        "too_small",
        "binary",
        "not_code",
        "exact_duplicate",
        "near_duplicate",
        "eval_leak",
    ):
        assert filters.get(reason, 0) >= 1, (reason, filters)
    assert manifest["eval_leak"]["refused"] == ["beta/lib/problem.py"]

    rows = [json.loads(line) for line in (out / "files.jsonl").read_text().splitlines()]
    kept = {f"{r['repo']}/{r['path']}" for r in rows}
    assert kept == {
        "alpha/src/App.vue",
        "alpha/src/util.ts",
        "alpha/src/main.py",
        "alpha/src/settings.py",
        "beta/lib/own.py",
        "gamma/pkg/mod0.py",
        "gamma/pkg/mod1.py",
        "gamma/pkg/mod2.py",
        "gamma/pkg/view.vue",
    }
    # split by repository: a repository's files are all on one side
    assert {r["split"] for r in rows if r["repo"] == "gamma"} == {"validation"}
    assert {r["split"] for r in rows if r["repo"] != "gamma"} == {"train"}
    assert manifest["splits"]["validation"]["repos"] == ["gamma"]
    assert manifest["languages"]["vue"]["files"] == 2

    # secrets: counted by type, replaced everywhere, never written
    assert manifest["secrets"]["files_scrubbed"] == 1
    assert {"AWS Access Key", "Private Key", "Secret Keyword"} <= set(
        manifest["secrets"]["by_type"]
    )
    everything = every_output_byte(out, tokenizer_dir)
    for secret in (AWS_KEY, PASSWORD, KEY_BODY):
        assert secret not in everything
    assert "<REDACTED>" in everything

    # sources: commits, kinds, licences
    sources = manifest["sources"]
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repos["alpha"], capture_output=True, text=True
    ).stdout.strip()
    assert sources["alpha"]["commit"] == head and sources["alpha"]["kind"] == "local-git"
    assert sources["gamma"]["kind"] == "directory" and sources["gamma"]["commit"] is None
    assert sources["alpha"]["licences"][0]["spdx_guess"] == "MIT"
    assert sources["beta"]["licences"][0]["spdx_guess"] == "Apache-2.0"
    assert sources["gamma"]["licences"] == []

    # tokens: rows of seq_len, documents separated by EOS, counts add up
    train = np.load(out / "train.npy", mmap_mode="r")
    assert train.shape == (manifest["splits"]["train"]["sequences"], 64)
    assert train.dtype == np.uint16
    eos = manifest["tokenizer"]["eos_token_id"]
    split = manifest["splits"]["train"]
    assert split["tokens"] == split["sequences"] * 64 + split["dropped_tail_tokens"]
    assert (np.asarray(train) == eos).sum() >= split["documents"] - 1
    assert manifest["tokens"] == sum(s["tokens"] for s in manifest["splits"].values())
    assert sum(r["tokens"] for r in rows) == manifest["tokens"]
    with gzip.open(out / "validation_files.jsonl.gz", "rt") as f:
        held = [json.loads(line) for line in f]
    assert {h["repo"] for h in held} == {"gamma"}

    # a second build is a new version, the first one untouched
    again = build_corpus(config_for(repos, tokenizer_dir, tmp_path / "out"))
    assert again.name == "v2" and (out / "manifest.json").exists()


def test_eval_leak_refuses_by_default(
    repos: dict[str, Path], tokenizer_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(CorpusError, match=r"HumanEval-X.*beta/lib/problem.py"):
        build_corpus(config_for(repos, tokenizer_dir, tmp_path / "out", eval_leak="refuse"))
    assert not list((tmp_path / "out").glob("corpus/v*"))
    with pytest.raises(CorpusError, match="eval_data"):
        build_corpus(config_for(repos, tokenizer_dir, tmp_path / "out", eval_data=""))
    with pytest.raises(CorpusError, match="expected refuse, drop or off"):
        build_corpus(config_for(repos, tokenizer_dir, tmp_path / "out", eval_leak="dropp"))


def test_git_url_languages_fim_and_fraction_split(
    repos: dict[str, Path], tokenizer_dir: Path, tmp_path: Path
) -> None:
    url = f"file://{repos['delta']}"
    config = config_for(
        repos,
        tokenizer_dir,
        tmp_path / "out",
        sources=[str(repos["alpha"]), str(repos["gamma"]), url],
        languages=["vue", "typescript"],
        validation_repos=[],
        validation_fraction=0.3,
        fim_rate=1.0,
        near_dup_threshold=0.0,
        scrub_secrets=False,
    )
    out = build_corpus(config)
    manifest = json.loads((out / "manifest.json").read_text())
    delta = manifest["sources"]["delta"]
    assert delta["kind"] == "git" and len(delta["commit"]) == 40 and delta["source"] == url
    rows = [json.loads(line) for line in (out / "files.jsonl").read_text().splitlines()]
    assert {r["language"] for r in rows} == {"vue", "typescript"}
    assert manifest["filters"]["other_language"] >= 1
    assert len(manifest["splits"]["validation"]["repos"]) == 1
    assert sorted(
        manifest["splits"]["train"]["repos"] + manifest["splits"]["validation"]["repos"]
    ) == [
        "alpha",
        "delta",
        "gamma",
    ]
    # every train document went through the FIM transform: sentinels in the rows
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    train = np.load(out / "train.npy")
    middle = tok.convert_tokens_to_ids("<fim_middle>")
    assert (train == middle).sum() >= manifest["splits"]["train"]["fim_documents"] - 1 > 0
    with pytest.raises(CorpusError, match="FIM token"):
        build_corpus(
            config_for(
                repos,
                tokenizer_dir,
                tmp_path / "o2",
                fim_rate=0.5,
                fim_tokens=["<a>", "<b>", "<c>"],
            )
        )


def test_configure_overrides_are_type_checked(tmp_path: Path) -> None:
    conf = tmp_path / "team.py"
    conf.write_text("# a team's corpus\nlanguages = ['vue', 'typescript']\nseq_len = 1024\n")
    config = configure(
        CorpusConfig(), [str(conf), "--sources=a,b", "--seq_len=512", "--no-such"][:3]
    )
    assert config.languages == ["vue", "typescript"] and config.sources == ["a", "b"]
    assert config.seq_len == 512
    with pytest.raises(ConfigError, match="unknown setting"):
        configure(CorpusConfig(), ["--no_such=1"])
    with pytest.raises(ConfigError, match="must be of type int"):
        configure(CorpusConfig(), ["--seq_len=long"])
    assert configure(CorpusConfig(), ["--fim_rate=1"]).fim_rate == 1.0
    assert configure(CorpusConfig(), ["--progress=False"]).progress is False


def test_cli_builds_a_corpus(
    repos: dict[str, Path], tokenizer_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from acepilot.training.commands import train

    parser = argparse.ArgumentParser()
    train.register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "train",
            "corpus",
            f"--sources={repos['alpha']},{repos['beta']}",
            f"--tokenizer={tokenizer_dir}",
            f"--out_dir={tmp_path / 'cli'}",
            f"--eval_data={EVAL_DATA}",
            "--eval_leak=drop",
            "--seq_len=32",
            "--name=team",
            "--progress=False",
        ]
    )
    assert args.func(args) == 0
    out = Path(capsys.readouterr().out.strip())
    assert out == tmp_path / "cli" / "team" / "v1"
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["splits"]["validation"]["repos"]) == 1


def test_every_example_config_file_loads() -> None:
    """training/config/*.py: corpus_* for the corpus, finetune_* for fine-tuning."""
    from acepilot.training.config import CONFIG_DIR
    from acepilot.training.finetune.train import FinetuneConfig

    files = sorted(p for p in CONFIG_DIR.glob("*.py") if p.name != "__init__.py")
    assert {f.name.split("_")[0] for f in files} == {"corpus", "finetune"}
    for path in files:
        defaults = CorpusConfig() if path.name.startswith("corpus_") else FinetuneConfig()
        assert configure(defaults, [path.stem]) != defaults


# ---------------------------------------------------------------------------
# The FIM and repository training formats (acepilot/training/corpus/fim.py)

FIM_TEXT = "import os\n\n\ndef add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"


def test_fim_documents_are_psm_or_spm_and_put_the_text_back_together() -> None:
    from acepilot.server.fim import FimFormat
    from acepilot.training.corpus import fim

    tokens = fim.FimTokens()
    settings = fim.FimSettings(rate=1.0, spm_rate=0.5, line_rate=0.5)
    rng = random.Random(0)
    orders = {"psm": 0, "spm": 0}
    serving = {order: FimFormat.from_manifest(tokens.manifest(order)) for order in ("psm", "spm")}
    for _ in range(200):
        document, order = fim.fim_document(FIM_TEXT, tokens, settings, rng)
        assert order in orders
        orders[order] += 1
        assert document.endswith(tokens.eos) and document.count(tokens.eos) == 1
        body = document[: -len(tokens.eos)]
        if order == "psm":
            assert body.startswith(tokens.prefix)
            prefix, rest = body[len(tokens.prefix) :].split(tokens.suffix)
            suffix, middle = rest.split(tokens.middle)
        else:
            assert body.startswith(tokens.prefix + tokens.suffix)
            suffix, rest = body[len(tokens.prefix + tokens.suffix) :].split(tokens.middle)
            # SPM: prefix and middle follow the middle token, in the text's order
            prefix, middle = rest[: len(rest) // 2], rest[len(rest) // 2 :]
        assert prefix + middle + suffix == FIM_TEXT
        # what serving writes for this prefix and suffix is exactly the document's start
        format_ = serving[order]
        assert format_ is not None
        assert document.startswith(format_.render(prefix, suffix))
    assert min(orders.values()) > 60  # both orders, about half each


def test_fim_line_middles_start_at_a_cursor_and_end_at_a_line_end() -> None:
    from acepilot.training.corpus import fim

    rng = random.Random(1)
    for _ in range(200):
        a, b = fim.line_span(FIM_TEXT, rng, max_lines=3)
        assert 0 <= a <= b <= len(FIM_TEXT)
        assert b == len(FIM_TEXT) or FIM_TEXT[b] == "\n"
        line = FIM_TEXT[FIM_TEXT.rfind("\n", 0, a) + 1 :].split("\n", 1)[0]
        assert line.strip()  # the cursor sits in a non-blank line
        assert FIM_TEXT[a:b].count("\n") <= 2


def test_fim_rate_zero_leaves_text_plain_and_draws_are_seeded() -> None:
    from acepilot.training.corpus import fim

    tokens = fim.FimTokens()
    plain = fim.FimSettings(rate=0.0)
    assert fim.fim_document(FIM_TEXT, tokens, plain, random.Random(0)) == (
        FIM_TEXT + tokens.eos,
        None,
    )
    half = fim.FimSettings(rate=0.5)
    first = [fim.fim_document(FIM_TEXT, tokens, half, random.Random(7)) for _ in range(3)]
    again = [fim.fim_document(FIM_TEXT, tokens, half, random.Random(7)) for _ in range(3)]
    assert first == again


def test_repository_documents_and_chunks() -> None:
    from acepilot.server.fim import RepoFormat
    from acepilot.training.corpus import fim

    tokens = fim.FimTokens()
    header = fim.repo_header(tokens, "pkg", [("pkg/a.py", "x = 1\n")], "pkg/b.py")
    repo = RepoFormat.from_manifest(tokens.repo_manifest())
    assert repo is not None
    # the serving side's rendering of a context file is what training wrote
    assert (
        header
        == "<repo_name>pkg\n" + repo.render_file("pkg/a.py", "x = 1\n") + "<file_sep>pkg/b.py\n"
    )
    chunks = fim.chunk_text(FIM_TEXT * 20, 100)
    assert "".join(chunks) == FIM_TEXT * 20
    assert all(len(c) <= 100 for c in chunks)
    assert all(c.endswith("\n") for c in chunks)
    assert fim.chunk_text("x" * 250, 100) == ["x" * 100, "x" * 100, "x" * 50]
    piece = fim.snippet(FIM_TEXT * 20, 60, random.Random(0))
    assert len(piece) <= 60 and piece in FIM_TEXT * 20
