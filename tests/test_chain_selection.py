"""chains.shortest_chains: the one selection behind `demo` and study's `shortest = N`.

Oracle: lengths worked by hand on a made-up list with a tie, and a brute-force choice on the corpus.
"""
from __future__ import annotations

import itertools
import json

from cotsurvival.chains import Chain, read_chains, shortest_chains


def _chain(i, reasoning):
    return Chain(f"c{i}", "q?", reasoning, "#### 1")


def test_hand_made_list_with_a_tie_keeps_source_order():
    chains = [_chain(0, "aaaaa"), _chain(1, "bb"), _chain(2, "cccc"), _chain(3, "dd"), _chain(4, "e")]
    # lengths 5, 2, 4, 2, 1: the three shortest are c4 (1), c1 (2), c3 (2, tie after c1) -> source order
    assert [c.id for c in shortest_chains(3, chains)] == ["c1", "c3", "c4"]
    assert [c.id for c in shortest_chains(2, iter(chains))] == ["c1", "c4"]   # tie broken by position
    assert shortest_chains(0, chains) == [] and len(shortest_chains(10, chains)) == 5


def test_builtin_corpus_matches_brute_force():
    corpus = list(read_chains("gsm8k"))
    chosen = shortest_chains(4)
    lengths = sorted(len(c.reasoning) for c in corpus)
    assert sorted(len(c.reasoning) for c in chosen) == lengths[:4]
    positions = [corpus.index(c) for c in chosen]
    assert positions == sorted(positions)
    assert all(len(a.reasoning) <= len(b.reasoning) or corpus.index(a) < corpus.index(b)
               for a, b in itertools.product(chosen, [c for c in corpus if c not in chosen]))


def test_demo_and_study_use_the_same_function(tmp_path):
    from cotsurvival import demo
    from cotsurvival.comparison.study import select_chains

    assert demo.shortest_chains is shortest_chains
    path = tmp_path / "chains.jsonl"
    rows = [{"id": f"s{i}", "question": "q?", "reasoning": "x" * n, "answer": "#### 1"} for i, n in enumerate([9, 3, 7, 3, 1])]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert [c.id for c in select_chains({"source": str(path), "shortest": 3})] == ["s1", "s3", "s4"]
    assert select_chains({"source": str(path), "shortest": 3}) == shortest_chains(3, path)
