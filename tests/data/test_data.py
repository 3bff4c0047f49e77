"""tinylm.data on the committed real-data sample (tests/fixtures/data, through the data_root fixture), on the full
data folder when present (full_data_root) and on small bad files written to tmp_path."""

from __future__ import annotations

import gzip
import importlib.util
import itertools
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tinylm.data import (
    PAPER_SAMPLING,
    TASKS,
    Article,
    DataError,
    Example,
    TaskData,
    articles_from_records,
    articles_path,
    balanced_sample,
    balanced_split,
    data_root,
    examples_from_hub,
    fewrel_label_names,
    fewrel_text,
    load_articles,
    load_task,
    read_articles,
    read_classes,
    read_fewrel,
    read_label_csv,
    read_label_jsonl,
)

REPO = Path(__file__).resolve().parents[2]
AG_NEWS_NAMES = ["World", "Sports", "Business", "Sci/Tech"]
# The data folder's files (shared/data/MANIFEST.md); the fixture folder has the same ones, smaller.
LAYOUT = {"ag_news/classes.txt", "ag_news/test.csv", "ag_news/train.jsonl", "dbpedia/classes.txt",
          "dbpedia/test.csv", "dbpedia/train.csv", "fewrel/pid2name.json", "fewrel/val_wiki.json",
          "vocab/bert-base-uncased-vocab.txt", "wikipedia/articles.jsonl.gz"}
# What scripts/build_test_fixtures.py puts in tests/fixtures/data.
FIXTURE_ARTICLES = 400
FIXTURE_AG_NEWS = (100, 250)  # distinct train rows, test rows per class
FIXTURE_DBPEDIA = 25  # rows per class in each file
FIXTURE_FEWREL = 25  # instances per relation
# Samples the fixture can give (train, test per label); AG News train takes every distinct row, so it works
# only because duplicate rows are dropped.
FIXTURE_SAMPLING: dict[str, tuple[int, int]] = {"ag_news": (100, 60), "dbpedia": (15, 10), "fewrel": (20, 5)}
# The full folder's counts (MANIFEST.md).
WIKI_ARTICLES = 51_959


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tasks(data_root: Path) -> dict[str, TaskData]:
    """Each task sampled from the fixture folder with FIXTURE_SAMPLING and the default seed, loaded once."""
    return {name: sample(name, data_root) for name in TASKS}


def sample(name: str, root: Path, **kwargs: object) -> TaskData:
    n_train, n_test = FIXTURE_SAMPLING[name]
    return load_task(name, root, **{"train_per_label": n_train, "test_per_label": n_test, **kwargs})


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def raises_at(path: Path, line: int | None, call: Callable[[], object], *words: str) -> DataError:
    """Assert call() raises a one-line DataError naming path (and 'name:line:' when a line is given)."""
    with pytest.raises(DataError) as info:
        result = call()
        if hasattr(result, "__next__"):
            list(result)  # type: ignore[call-overload]
    message = str(info.value)
    assert "\n" not in message
    assert path.name in message
    if line is not None:
        assert f"{path.name}:{line}:" in message
    for word in words:
        assert word in message, message
    return info.value


# ---------------------------------------------------------------- paths


def test_data_root_explicit_env_and_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert data_root(tmp_path) == tmp_path
    monkeypatch.setenv("TINYLM_DATA", str(tmp_path))
    assert data_root() == tmp_path
    missing = tmp_path / "nope"
    monkeypatch.setenv("TINYLM_DATA", str(missing))
    with pytest.raises(DataError, match=r"nope.*TINYLM_DATA"):
        data_root()
    with pytest.raises(DataError, match="nope"):
        data_root(missing)


def test_fixture_folder_has_the_data_folder_layout_and_is_small(data_root: Path) -> None:
    files = {p.relative_to(data_root).as_posix() for p in data_root.rglob("*") if p.is_file()}
    assert files == LAYOUT | {"README.md"}
    assert sum((data_root / f).stat().st_size for f in files) < 2e6


# ---------------------------------------------------------------- readers on real rows (the fixture folder)


def test_read_classes_real(data_root: Path) -> None:
    assert read_classes(data_root / "ag_news" / "classes.txt") == AG_NEWS_NAMES
    dbpedia = read_classes(data_root / "dbpedia" / "classes.txt")
    assert len(dbpedia) == 14 and dbpedia[0] == "Artist" and "Film" in dbpedia


def test_ag_news_train_jsonl_real(data_root: Path) -> None:
    examples = read_label_jsonl(data_root / "ag_news" / "train.jsonl", 4, backslash_breaks=True)
    distinct = set(examples)
    assert len(examples) == 478 and len(distinct) == 4 * FIXTURE_AG_NEWS[0]  # 78 rows repeated, as in the real file
    assert Counter(e.label for e in distinct) == dict.fromkeys(range(4), FIXTURE_AG_NEWS[0])
    assert all(e.text and e.text == e.text.strip() and "\\" not in e.text for e in examples)


def test_ag_news_test_csv_real(data_root: Path) -> None:
    examples = read_label_csv(data_root / "ag_news" / "test.csv", 4, "ag_news")
    assert Counter(e.label for e in examples) == dict.fromkeys(range(4), FIXTURE_AG_NEWS[1])
    assert all(e.text and "\\" not in e.text and "  " not in e.text for e in examples)
    first = examples[0]  # "3","Fears for T N pension after talks","Unions representing workers at Turner   Newall ..."
    assert first.label == 2
    assert first.text.startswith("Fears for T N pension after talks Unions representing workers at Turner Newall say")
    # "...A second\team of rocketeers..." in the file: the backslash is a line break, not part of a word
    assert "A second team of rocketeers" in examples[1].text


@pytest.mark.parametrize("split", ["train", "test"])
def test_dbpedia_csv_real(data_root: Path, split: str) -> None:
    examples = read_label_csv(data_root / "dbpedia" / f"{split}.csv", 14, "dbpedia")
    assert Counter(e.label for e in examples) == dict.fromkeys(range(14), FIXTURE_DBPEDIA)
    assert all(e.text and "  " not in e.text for e in examples)


def test_fewrel_real(data_root: Path) -> None:
    path = data_root / "fewrel" / "val_wiki.json"
    examples, relation_ids = read_fewrel(path)
    assert len(relation_ids) == 16 and relation_ids == sorted(relation_ids)
    assert Counter(e.label for e in examples) == dict.fromkeys(range(16), FIXTURE_FEWREL)
    assert all(e.text and "  " not in e.text for e in examples)
    names = fewrel_label_names(path, relation_ids)
    assert len(set(names)) == 16 and names[relation_ids.index("P177")] == "crosses"

    raw = json.loads(path.read_text(encoding="utf-8"))
    first = raw[relation_ids[0]][0]
    assert examples[0].text == " ".join(t.strip() for t in first["tokens"] if t.strip())

    marked, _ = read_fewrel(path, markers=True)
    for tag in ("[E1]", "[/E1]", "[E2]", "[/E2]"):
        assert all(e.text.count(tag) == 1 for e in marked)
    # The first P177 instance: head "cape girardeau bridge" (tokens 26-28), tail "mississippi river" (19-20).
    p177 = marked[examples.index(Example(" ".join(raw["P177"][0]["tokens"]), relation_ids.index("P177")))]
    assert "[E2] Mississippi River [/E2]" in p177.text and "[E1] Cape Girardeau Bridge [/E1]" in p177.text


def test_read_articles_real_first_lines(data_root: Path) -> None:
    articles = list(itertools.islice(read_articles(data_root / "wikipedia" / "articles.jsonl.gz"), 300))
    assert len(articles) == 300
    assert articles[0] == Article(articles[0].id, "Anarchism", articles[0].text) and articles[0].id == "12"
    assert all(isinstance(a.id, str) and a.title.strip() and a.text.strip() for a in articles)
    assert len({a.id for a in articles}) == 300


def test_load_articles_real(data_root: Path) -> None:
    everything = list(read_articles(data_root / "wikipedia" / "articles.jsonl.gz"))
    assert len(everything) == FIXTURE_ARTICLES
    picked = load_articles(25, seed=42, root=data_root)
    order = np.random.default_rng(42).permutation(FIXTURE_ARTICLES)[:25]
    assert picked == [everything[i] for i in order]  # the documented recipe, exactly
    assert articles_path(data_root) == data_root / "wikipedia" / "articles.jsonl.gz"


def test_load_articles_too_many_names_count_and_hub(data_root: Path) -> None:
    err = raises_at(data_root / "wikipedia" / "articles.jsonl.gz", None,
                    lambda: load_articles(FIXTURE_ARTICLES + 1, root=data_root), str(FIXTURE_ARTICLES), "hub")
    assert str(FIXTURE_ARTICLES + 1) in str(err)


def test_load_articles_seeded(tmp_path: Path) -> None:
    path = tmp_path / "wikipedia" / "articles.jsonl.gz"
    path.parent.mkdir()
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i in range(50):
            f.write(json.dumps({"id": i, "title": f"T{i}", "text": f"Text {i}.\nMore."}) + "\n")
    first = load_articles(10, seed=1, root=tmp_path)
    assert first == load_articles(10, seed=1, root=tmp_path)
    assert first != load_articles(10, seed=2, root=tmp_path)
    assert len({a.id for a in first}) == 10 and first[0].text.endswith("\nMore.")
    assert len(load_articles(50, root=tmp_path)) == 50 and load_articles(0, root=tmp_path) == []


# ---------------------------------------------------------------- load_task on real rows (the fixture folder)


def check_sample(task: TaskData, n_train: int, n_test: int) -> None:
    """Balanced counts, shuffled order, and (AG News, DBpedia) no duplicate and no test text in training."""
    assert task.num_labels == len(task.label_names)
    assert Counter(e.label for e in task.train) == dict.fromkeys(range(task.num_labels), n_train)
    assert Counter(e.label for e in task.test) == dict.fromkeys(range(task.num_labels), n_test)
    assert [e.label for e in task.train[:20]] != sorted(e.label for e in task.train[:20])  # shuffled, not grouped
    if task.name != "fewrel":
        assert not {e.text for e in task.train} & {e.text for e in task.test}
        assert len({e.text for e in task.train}) == len(task.train)  # duplicate rows of the pool are dropped


@pytest.mark.parametrize("name", TASKS)
def test_load_task_counts_and_disjoint(tasks: dict[str, TaskData], name: str) -> None:
    assert tasks[name].name == name
    check_sample(tasks[name], *FIXTURE_SAMPLING[name])


def test_load_task_fewrel_disjoint_by_instance(data_root: Path, tasks: dict[str, TaskData]) -> None:
    """Each pool instance is used at most once across train and test (the same sentence may recur in the pool)."""
    pool = Counter(read_fewrel(data_root / "fewrel" / "val_wiki.json")[0])
    used = Counter(tasks["fewrel"].train) + Counter(tasks["fewrel"].test)
    assert all(used[e] <= pool[e] for e in used)
    assert sum(used.values()) == 16 * FIXTURE_FEWREL  # 20 + 5 uses the whole relation


def test_load_task_label_names(tasks: dict[str, TaskData]) -> None:
    assert tasks["ag_news"].label_names == AG_NEWS_NAMES
    assert tasks["dbpedia"].num_labels == 14
    assert tasks["fewrel"].num_labels == 16 and "crosses" in tasks["fewrel"].label_names


@pytest.mark.parametrize("name", TASKS)
def test_load_task_seeded(data_root: Path, tasks: dict[str, TaskData], name: str) -> None:
    same = sample(name, data_root, seed=42)
    assert same == tasks[name]
    other = sample(name, data_root, seed=7)
    assert other.train != same.train and other.test != same.test


@pytest.mark.parametrize("name", TASKS)
def test_load_task_test_sample_ignores_train_count(data_root: Path, tasks: dict[str, TaskData], name: str) -> None:
    """`tinylm evaluate` loads with train_per_label=0 and must see the training run's test sample."""
    task = sample(name, data_root, train_per_label=0)
    assert task.train == [] and task.test == tasks[name].test


def test_load_task_small_counts_and_markers(data_root: Path) -> None:
    task = load_task("fewrel", data_root, train_per_label=5, test_per_label=3, fewrel_markers=True, seed=3)
    assert len(task.train) == 16 * 5 and len(task.test) == 16 * 3
    assert all("[E1]" in e.text and "[/E2]" in e.text for e in task.train + task.test)


def test_load_task_too_many_per_label(data_root: Path) -> None:
    raises_at(data_root / "dbpedia" / "train.csv", None,
              lambda: load_task("dbpedia", data_root, train_per_label=500, test_per_label=10), "needed", "500")
    # AG News: 100 distinct train rows per class, 118-121 rows with the repeats; 101 is too many.
    raises_at(data_root / "ag_news" / "train.jsonl", None,
              lambda: load_task("ag_news", data_root, train_per_label=101, test_per_label=1),
              "100 examples, 101 needed (after dropping duplicate rows and test-pool texts)")


def test_load_task_unknown_name_and_fewrel_hub(data_root: Path) -> None:
    with pytest.raises(ValueError, match="ag_news, dbpedia, fewrel"):
        load_task("imdb", data_root)
    with pytest.raises(DataError, match="not supported for fewrel"):
        load_task("fewrel", data_root, source="hub")
    with pytest.raises(ValueError, match="local, hub"):
        load_task("ag_news", data_root, source="s3")


def test_load_task_ag_news_csv_train_fallback(tmp_path: Path) -> None:
    """Without train.jsonl, the original train.csv layout is read."""
    write(tmp_path / "ag_news" / "classes.txt", "A\nB\n")
    write(tmp_path / "ag_news" / "train.csv", "".join(f'"{i % 2 + 1}","T{i}","D\\{i}"\n' for i in range(6)))
    write(tmp_path / "ag_news" / "test.csv", "".join(f'"{i % 2 + 1}","X{i}","Y{i}"\n' for i in range(4)))
    task = load_task("ag_news", tmp_path, train_per_label=3, test_per_label=2)
    assert sorted(e.text for e in task.train) == [f"T{i} D {i}" for i in range(6)]
    assert len(task.test) == 4 and task.label_names == ["A", "B"]


def test_load_task_drops_test_texts_from_train(tmp_path: Path) -> None:
    write(tmp_path / "ag_news" / "classes.txt", "A\nB\n")
    rows = [{"label": 0, "text": "same"}, {"label": 0, "text": "a1"}, {"label": 1, "text": "b1"},
            {"label": 1, "text": "b1"}, {"label": 1, "text": "b2"}]
    write(tmp_path / "ag_news" / "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    write(tmp_path / "ag_news" / "test.csv", '"1","same",""\n"2","other","x"\n')
    task = load_task("ag_news", tmp_path, train_per_label=1, test_per_label=1)
    assert {e.text for e in task.train} == {"a1", "b1"} or {e.text for e in task.train} == {"a1", "b2"}
    too_few = r"label 0 \(A\) has 1 examples, 2 needed \(after dropping duplicate rows and test-pool texts\)"
    with pytest.raises(DataError, match=too_few):
        load_task("ag_news", tmp_path, train_per_label=2, test_per_label=1)


def test_load_task_bad_file_in_data_folder(data_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "dbpedia"
    folder.mkdir()
    (folder / "classes.txt").write_bytes((data_root / "dbpedia" / "classes.txt").read_bytes())
    (folder / "test.csv").write_bytes((data_root / "dbpedia" / "test.csv").read_bytes())
    lines = (data_root / "dbpedia" / "train.csv").read_text(encoding="utf-8").splitlines()
    lines[2] = '"15","A text about nothing"'
    write(folder / "train.csv", "\n".join(lines) + "\n")
    raises_at(folder / "train.csv", 3, lambda: load_task("dbpedia", tmp_path), "class 15 out of range 1..14")


# ---------------------------------------------------------------- the full data folder (skipped without it)


def test_full_data_folder_counts_and_paper_samples(full_data_root: Path) -> None:
    """The full files hold what MANIFEST.md says, and the paper's samples can be drawn from them."""
    root = full_data_root
    ag_train = read_label_jsonl(root / "ag_news" / "train.jsonl", 4, backslash_breaks=True)
    assert len(ag_train) == 5991 and len(set(ag_train)) == 5991 - 999  # the shared subset repeats 999 rows
    assert min(Counter(e.label for e in ag_train).values()) >= 1450
    ag_test = read_label_csv(root / "ag_news" / "test.csv", 4, "ag_news")
    assert Counter(e.label for e in ag_test) == dict.fromkeys(range(4), 1900)
    for split in ("train", "test"):
        counts = Counter(e.label for e in read_label_csv(root / "dbpedia" / f"{split}.csv", 14, "dbpedia"))
        assert sum(counts.values()) == 5000 and set(counts) == set(range(14)) and min(counts.values()) >= 327
    fewrel, relation_ids = read_fewrel(root / "fewrel" / "val_wiki.json")
    assert len(relation_ids) == 16 and Counter(e.label for e in fewrel) == dict.fromkeys(range(16), 700)

    everything = list(read_articles(root / "wikipedia" / "articles.jsonl.gz"))
    assert len(everything) == WIKI_ARTICLES and everything[0].title == "Anarchism"
    order = np.random.default_rng(42).permutation(WIKI_ARTICLES)[:25]
    assert load_articles(25, seed=42, root=root) == [everything[i] for i in order]
    raises_at(root / "wikipedia" / "articles.jsonl.gz", None,
              lambda: load_articles(WIKI_ARTICLES + 1, root=root), str(WIKI_ARTICLES), "hub")

    for name in TASKS:
        task = load_task(name, root)  # the paper's per-label counts
        check_sample(task, *PAPER_SAMPLING[name])
    fewrel_task = load_task("fewrel", root)
    used = Counter(fewrel_task.train) + Counter(fewrel_task.test)
    pool = Counter(fewrel)
    assert sum(used.values()) == 16 * 700 and all(used[e] <= pool[e] for e in used)


def test_fixtures_are_the_scripts_sample_of_the_full_folder(full_data_root: Path, tmp_path: Path) -> None:
    """tests/fixtures/data is what scripts/build_test_fixtures.py builds from the data folder (real rows, verbatim)."""
    spec = importlib.util.spec_from_file_location("build_test_fixtures", REPO / "scripts" / "build_test_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_test_fixtures"] = module
    spec.loader.exec_module(module)
    built = module.build(full_data_root, tmp_path / "fixtures")
    committed = module.OUT
    assert {p.relative_to(committed).as_posix() for p in committed.rglob("*") if p.is_file()} == set(built)
    for name, data in built.items():
        have = (committed / name).read_bytes()
        if name.endswith(".gz"):  # compressed bytes may differ between zlib builds; the content may not
            have, data = gzip.decompress(have), gzip.decompress(data)
        assert have == data, name


# ---------------------------------------------------------------- sampling


def pool(sizes: list[int]) -> list[Example]:
    return [Example(f"label{label} row{i}", label) for label, n in enumerate(sizes) for i in range(n)]


def test_balanced_sample_counts_determinism_and_order() -> None:
    examples = pool([30, 40, 50])
    sample = balanced_sample(examples, 10, 3, seed=0)
    assert Counter(e.label for e in sample) == {0: 10, 1: 10, 2: 10}
    assert len(set(sample)) == 30 and set(sample) <= set(examples)
    assert sample == balanced_sample(examples, 10, 3, seed=0)
    assert sample != balanced_sample(examples, 10, 3, seed=1)
    assert [e.label for e in sample] != sorted(e.label for e in sample)
    assert balanced_sample(examples, 0, 3, seed=0) == []


def test_balanced_split_counts_and_disjoint_by_row() -> None:
    examples = [*pool([20, 20]), *pool([20, 20])]  # every text twice: different rows may land on both sides
    train, test = balanced_split(examples, 12, 8, 2, seed=5)
    assert Counter(e.label for e in train) == {0: 12, 1: 12}
    assert Counter(e.label for e in test) == {0: 8, 1: 8}
    used = Counter(train) + Counter(test)
    assert all(count <= 2 for count in used.values())  # no row used twice
    assert (train, test) == balanced_split(examples, 12, 8, 2, seed=5)
    assert balanced_split(examples, 0, 8, 2, seed=5)[1] == test  # test sample independent of train size
    exact = pool([5, 5])
    train, test = balanced_split(exact, 3, 2, 2, seed=0)
    assert sorted(train + test, key=lambda e: e.text) == sorted(exact, key=lambda e: e.text)


def test_sampling_too_few_names_source_label_and_counts() -> None:
    examples = pool([30, 4, 30])
    with pytest.raises(DataError) as info:
        balanced_sample(examples, 5, 3, seed=0, source="x/train.jsonl", label_names=["a", "b", "c"])
    assert str(info.value) == "x/train.jsonl: label 1 (b) has 4 examples, 5 needed"
    with pytest.raises(DataError, match=r"pool.json: label 1 has 4 examples, 5 needed \(3 train \+ 2 test\)"):
        balanced_split(examples, 3, 2, 3, seed=0, source="pool.json")
    with pytest.raises(DataError, match=r"label 3, outside 0\.\.2"):
        balanced_sample([*examples, Example("x", 3)], 1, 3, seed=0, source="s")
    with pytest.raises(ValueError, match=">= 0"):
        balanced_sample(examples, -1, 3, seed=0)


# ---------------------------------------------------------------- bad input: CSV and classes

AG_OK = '"1","Title one","Desc one"\n"2","Title two","Desc\\two"\n'


@pytest.mark.parametrize(
    ("bad_row", "words"),
    [
        ('"3","only two columns"', ["expected 3 columns", "got 2"]),
        ('"3","a","b","c"', ["expected 3 columns", "got 4"]),
        ('"x","Title","Description"', ["class 'x' is not an integer"]),
        ('"","Title","Description"', ["not an integer"]),
        ('"5","Title","Description"', ["class 5 out of range 1..4"]),
        ('"0","Title","Description"', ["class 0 out of range 1..4"]),
        ('"2"," ","\\"', ["empty text"]),
    ],
)
def test_bad_ag_news_csv_row(tmp_path: Path, bad_row: str, words: list[str]) -> None:
    path = write(tmp_path / "test.csv", AG_OK + bad_row + "\n" + AG_OK)
    raises_at(path, 3, lambda: read_label_csv(path, 4, "ag_news"), *words)


def test_csv_line_number_counts_multiline_fields_and_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "test.csv", '"1","Multi\nline title","d"\n\n"9","t","d"\n')
    raises_at(path, 4, lambda: read_label_csv(path, 4))
    good = write(tmp_path / "good.csv", '"1","Multi\nline title","d"\n\n"4","t","d"\n')
    assert read_label_csv(good, 4) == [Example("Multi line title d", 0), Example("t d", 3)]


def test_dbpedia_csv_layouts(tmp_path: Path) -> None:
    two = write(tmp_path / "two.csv", '"1","Some content"\n"2","More content"\n')
    three = write(tmp_path / "three.csv", '1,"A Title","Some content"\n2,"B","More content"\n')
    expected = [Example("Some content", 0), Example("More content", 1)]
    assert read_label_csv(two, 2, "dbpedia") == expected == read_label_csv(three, 2, "dbpedia")
    mixed = write(tmp_path / "mixed.csv", '"1","Some content"\n"2","B","More content"\n')
    raises_at(mixed, 2, lambda: read_label_csv(mixed, 2, "dbpedia"), "expected 2 columns", "got 3")
    one = write(tmp_path / "one.csv", '"1"\n')
    raises_at(one, 1, lambda: read_label_csv(one, 2, "dbpedia"), "expected 2 or 3 columns")


def test_csv_bad_quoting_and_encoding(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b'"1","ok","fine"\n"2","caf\xe9","x"\n')
    raises_at(path, 2, lambda: read_label_csv(path, 4), "UTF-8")
    huge = write(tmp_path / "huge.csv", '"1","' + "x" * 200_000 + '","y"\n')
    raises_at(huge, 1, lambda: read_label_csv(huge, 4), "malformed CSV")


@pytest.mark.parametrize("reader", [lambda p: read_label_csv(p, 4), lambda p: read_label_jsonl(p, 4),
                                    read_classes, lambda p: list(read_articles(p)), read_fewrel])
def test_empty_and_missing_files(tmp_path: Path, reader: Callable[[Path], object]) -> None:
    empty = write(tmp_path / "empty.txt", "\n  \n")
    raises_at(empty, None, lambda: reader(empty))
    missing = tmp_path / "missing.txt"
    raises_at(missing, None, lambda: reader(missing), "file not found")
    raises_at(tmp_path, None, lambda: reader(tmp_path))  # a folder where a file should be


def test_bad_classes(tmp_path: Path) -> None:
    path = write(tmp_path / "classes.txt", "World\n\nSports\nWorld\n")
    raises_at(path, 4, lambda: read_classes(path), "duplicate class name 'World'")
    assert read_classes(write(tmp_path / "ok.txt", "\ufeffA\r\nB\r\n\r\n")) == ["A", "B"]


# ---------------------------------------------------------------- bad input: JSONL


@pytest.mark.parametrize(
    ("bad_line", "words"),
    [
        ('{"label": 1, "text": "unterminated', ["invalid JSON"]),
        ("[1, 2]", ["expected a JSON object, got list"]),
        ('{"label": 1}', ["missing field 'text'"]),
        ('{"text": "no label"}', ["missing field 'label'"]),
        ('{"label": "1", "text": "t"}', ["'label' must be an integer, got str"]),
        ('{"label": true, "text": "t"}', ["'label' must be an integer, got bool"]),
        ('{"label": 1.0, "text": "t"}', ["'label' must be an integer, got float"]),
        ('{"label": 4, "text": "t"}', ["label 4 out of range 0..3"]),
        ('{"label": -1, "text": "t"}', ["label -1 out of range 0..3"]),
        ('{"label": 1, "text": ["t"]}', ["'text' must be a string, got list"]),
        ('{"label": 1, "text": " \\\\ "}', ["empty 'text'"]),
    ],
)
def test_bad_jsonl_line(tmp_path: Path, bad_line: str, words: list[str]) -> None:
    good = '{"label": 0, "text": "a\\\\b  c"}\n\n'
    path = write(tmp_path / "train.jsonl", good + bad_line + "\n" + good)
    raises_at(path, 3, lambda: read_label_jsonl(path, 4, backslash_breaks=True), *words)


def test_jsonl_good_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "train.jsonl", '{"label": 0, "text": "a\\\\b  c"}\n{"label": 3, "text": "x\\\\"}\n')
    assert read_label_jsonl(path, 4, backslash_breaks=True) == [Example("a b c", 0), Example("x", 3)]
    assert read_label_jsonl(path, 4)[0].text == "a\\b c"


# ---------------------------------------------------------------- bad input: FewRel


def fewrel_instance(**changes: object) -> dict[str, object]:
    instance: dict[str, object] = {"tokens": ["Alan", "Turing", " ", "was", "born", "in", "London", "."],
                                   "h": ["alan turing", "Q7251", [[0, 1]]], "t": ["london", "Q84", [[6]]]}
    instance.update(changes)
    return {k: v for k, v in instance.items() if v is not None}


def test_fewrel_text_and_markers() -> None:
    assert fewrel_text(fewrel_instance()) == "Alan Turing was born in London ."
    assert fewrel_text(fewrel_instance(), markers=True) == "[E1] Alan Turing [/E1] was born in [E2] London [/E2] ."
    nested = fewrel_instance(h=["x", "Q", [[0, 1], [5]]], t=["y", "Q", [[1]]])  # first listed span is used
    assert fewrel_text(nested, markers=True) == "[E1] Alan [E2] Turing [/E2] [/E1] was born in London ."


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"tokens": None}, ["missing field 'tokens'"]),
        ({"h": None}, ["missing field 'h'"]),
        ({"t": None}, ["missing field 't'"]),
        ({"tokens": "Alan Turing"}, ["'tokens' must be a non-empty list of strings"]),
        ({"h": ["alan turing", "Q7251", [[0, 8]]]}, ["head entity position 8 out of range (sentence has 8 tokens)"]),
        ({"t": ["london", "Q84", [[6], [-1]]]}, ["tail entity position -1 out of range"]),
        ({"t": ["london", "Q84", []]}, ["tail entity must be [name, id, [[token positions], ...]]"]),
        ({"h": ["alan turing", "Q7251", [["0"]]]}, ["head entity position '0' is not an integer"]),
    ],
)
def test_bad_fewrel_instance(tmp_path: Path, changes: dict[str, object], words: list[str]) -> None:
    data = {"P2": [fewrel_instance()], "P1": [fewrel_instance(), fewrel_instance(**changes)]}
    path = write(tmp_path / "val_wiki.json", json.dumps(data))
    raises_at(path, None, lambda: read_fewrel(path), "relation P1, instance 2", *words)


def test_bad_fewrel_json_and_shape(tmp_path: Path) -> None:
    path = write(tmp_path / "val_wiki.json", '{\n  "P1": [\n    {"tokens": ["a",]}\n  ]\n}\n')
    raises_at(path, 3, lambda: read_fewrel(path), "invalid JSON")
    for text in ("[]", "{}", '{"P1": []}', '{"P1": {"tokens": []}}'):
        path = write(tmp_path / "shape.json", text)
        raises_at(path, None, lambda p=path: read_fewrel(p))


def test_fewrel_small_file_labels_and_names(tmp_path: Path) -> None:
    data = {"P2": [fewrel_instance()] * 3, "P10": [fewrel_instance()] * 3}
    path = write(tmp_path / "val_wiki.json", json.dumps(data))
    examples, ids = read_fewrel(path)
    assert ids == ["P10", "P2"] and [e.label for e in examples] == [0, 0, 0, 1, 1, 1]
    assert fewrel_label_names(path, ids) == ["P10", "P2"]  # no pid2name.json: ids are the names
    write(tmp_path / "pid2name.json", json.dumps({"P2": ["same", "d"], "P10": ["same", "d"]}))
    assert fewrel_label_names(path, ids) == ["same (P10)", "same (P2)"]
    bad = write(tmp_path / "pid2name.json", "{\n oops\n}")
    raises_at(bad, 2, lambda: fewrel_label_names(path, ids), "invalid JSON")


# ---------------------------------------------------------------- bad input: Wikipedia


@pytest.mark.parametrize(
    ("bad_line", "words"),
    [
        ('{"id": 3, "title": "T"', ["invalid JSON"]),
        ('{"id": 3, "text": "x"}', ["missing field 'title'"]),
        ('{"title": "T", "text": "x"}', ["missing field 'id'"]),
        ('{"id": 3, "title": "T", "text": 5}', ["'text' must be a string, got int"]),
        ('{"id": true, "title": "T", "text": "x"}', ["'id' must be"]),
        ('{"id": 3, "title": "T", "text": "  "}', ["empty 'text'"]),
        ('"just a string"', ["expected a JSON object"]),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_bad_article_line(tmp_path: Path, bad_line: str, words: list[str], gz: bool) -> None:
    good = json.dumps({"id": "1", "title": "T", "text": "Some text."}) + "\n"
    content = (good + good + bad_line + "\n").encode()
    path = tmp_path / ("articles.jsonl.gz" if gz else "articles.jsonl")
    path.write_bytes(gzip.compress(content) if gz else content)
    raises_at(path, 3, lambda: list(read_articles(path)), *words)


def test_corrupt_gzip_and_missing_articles(tmp_path: Path) -> None:
    path = tmp_path / "wikipedia" / "articles.jsonl.gz"
    path.parent.mkdir()
    path.write_bytes(b"not gzip at all")
    raises_at(path, 1, lambda: load_articles(1, root=tmp_path), "cannot read")
    path.write_bytes(gzip.compress(b'{"id": 1, "title": "T", "text": "x"}\n' * 50)[:-30])  # truncated
    raises_at(path, None, lambda: load_articles(1, root=tmp_path), "cannot read")
    path.unlink()
    raises_at(path, None, lambda: load_articles(1, root=tmp_path), "file not found")
    plain = write(tmp_path / "wikipedia" / "articles.jsonl", '{"id": 1, "title": "T", "text": "x"}\n')
    assert articles_path(tmp_path) == plain and load_articles(1, root=tmp_path) == [Article("1", "T", "x")]


# ---------------------------------------------------------------- hub conversions (no network)


def test_examples_from_hub_ag_news_and_dbpedia() -> None:
    from datasets import ClassLabel, Dataset, Features, Value

    ag = Dataset.from_dict(
        {"text": ["Oil up\\Prices rose", "Cup won  today"], "label": [2, 1]},
        features=Features({"text": Value("string"), "label": ClassLabel(names=AG_NEWS_NAMES)}),
    )
    assert examples_from_hub(ag, "ag_news") == [Example("Oil up Prices rose", 2), Example("Cup won today", 1)]
    db = Dataset.from_dict(
        {"label": [0, 1], "title": ["Acme", "Bob"], "content": [" Acme is a firm. ", "Bob paints."]},
        features=Features({"label": ClassLabel(names=["Company", "Artist"]), "title": Value("string"),
                           "content": Value("string")}),
    )
    assert examples_from_hub(db, "dbpedia") == [Example("Acme is a firm.", 0), Example("Bob paints.", 1)]


def test_examples_from_hub_bad_rows() -> None:
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=["a", "b"])})
    bad = Dataset.from_dict({"text": ["fine", "   "], "label": [0, 1]}, features=features)
    with pytest.raises(DataError, match=r"hub:fancyzhx/ag_news: row 2: empty 'text'"):
        examples_from_hub(bad, "ag_news")
    unlabelled = Dataset.from_dict({"text": ["x"], "label": [0]})
    with pytest.raises(DataError, match="ClassLabel"):
        examples_from_hub(unlabelled, "ag_news")
    with pytest.raises(DataError, match="not supported for fewrel"):
        examples_from_hub(bad, "fewrel")
    with pytest.raises(DataError, match=r"missing column\(s\) \['content'\]"):
        examples_from_hub(bad, "dbpedia")


def test_articles_from_hub_records() -> None:
    from datasets import Dataset

    records = Dataset.from_dict({"id": ["12", "25"], "url": ["u1", "u2"], "title": ["Anarchism", "Autism"],
                                 "text": ["Anarchism is...\nMore.", "Autism is..."]})
    assert articles_from_records(records) == [Article("12", "Anarchism", "Anarchism is...\nMore."),
                                              Article("25", "Autism", "Autism is...")]
    bad = Dataset.from_dict({"id": ["1"], "title": ["T"], "text": [""]})
    with pytest.raises(DataError, match="wikimedia/wikipedia: row 1: empty 'text'"):
        articles_from_records(bad)
