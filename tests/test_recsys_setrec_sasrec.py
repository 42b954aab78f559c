"""SETRec on a trained SASRec: at CF weight 1 it ranks warm items exactly as its SASRec, every weight's score is one
inner product (query . key == w * cf + (1 - w) * semantic, cold items imputed), the SASRec stays frozen while the
semantic tokens learn, save/load identity, and the learning-curve summaries of the benchmark."""

import pytest
import torch

from benchmarks.recsys.equal import at_time, plateau, time_to
from gentok.config import from_dict, to_dict
from recsys.models.base import topk_items, seen_mask
from recsys.models.sasrec import SASRec, SASRecConfig
from recsys.models.setrec import SETRecConfig
from recsys.models.setrec_sasrec import SETRecSASRec, SETRecSASRecConfig

E, C, N = 24, 16, 30
HISTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14], [0]]


def _models(seed=0):
    torch.manual_seed(seed)
    sas = SASRec(SASRecConfig(num_items=N, dim=C, depth=1, heads=2, max_len=8, dropout=0.0)).eval()
    g = torch.Generator().manual_seed(seed)
    text = torch.nn.functional.normalize(torch.randn(N, E, generator=g), dim=-1)
    return sas, SETRecSASRec.on(sas, text, SETRecConfig.tiny(E, C)).eval()


def test_cf_weight_one_is_exactly_the_sasrec():
    sas, m = _models()
    tau = m.config.temperature
    torch.testing.assert_close(m.score_all(HISTS, weight=1.0), sas.score_all(HISTS) * tau, atol=1e-5, rtol=1e-5)
    m.cf_weight.fill_(1.0)
    exclude = seen_mask(HISTS, N)
    assert torch.equal(m.recommend(HISTS, k=5)[0], topk_items(sas.score_all(HISTS), 5, exclude)[0])


def test_every_weight_is_one_inner_product_and_cold_items_score_from_text():
    _, m = _models()
    m.drop_cf(torch.tensor([2, 5, 17]))
    cf, sem = m.part_scores_for(HISTS)
    assert torch.equal(cf[:, [2, 5, 17]], sem[:, [2, 5, 17]])  # imputed CF part
    for w in (0.0, 0.3, 1.0):
        torch.testing.assert_close(m.score_all(HISTS, weight=w), w * cf + (1 - w) * sem, atol=1e-5, rtol=1e-5)


def test_training_moves_the_semantic_part_only_and_learns_a_successor():
    sas, m = _models()
    frozen = {k: v.clone() for k, v in m.sasrec.state_dict().items()}
    m.train()
    assert not m.sasrec.training and not any(p.requires_grad for p in m.sasrec.parameters())
    g = torch.Generator().manual_seed(0)
    windows = torch.randint(0, N - 9, (32,), generator=g)[:, None] + torch.arange(9)[None]  # i -> i + 1
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], 3e-3)
    first = None
    for _ in range(120):
        out = m(windows)
        first = first if first is not None else float(out.loss.detach())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert float(out.loss.detach()) < 0.5 * first
    for k, v in m.sasrec.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    m.eval()
    hists = [list(range(s, s + 5)) for s in range(0, 20, 3)]
    _, sem = m.part_scores_for(hists)
    assert (sem.argmax(1) == torch.tensor([h[-1] + 1 for h in hists])).float().mean() >= 0.8


def test_save_load_identity(tmp_path):
    _, m = _models()
    m.drop_cf(torch.tensor([4]))
    m.cf_weight.fill_(0.7)
    m.save_pretrained(tmp_path / "m")
    back = SETRecSASRec.from_pretrained(tmp_path / "m").eval()
    assert from_dict(to_dict(m.config)) == m.config == back.config
    assert torch.equal(back.score_all(HISTS), m.score_all(HISTS))


def test_config_refuses_a_sasrec_of_another_width():
    with pytest.raises(ValueError, match="cf_dim"):
        SETRecSASRecConfig(cf_dim=32, sasrec=SASRecConfig(dim=64))


def test_curve_summaries():
    curve = [{"total_cpu_s": s, "valid_ndcg@10": v, "test_ndcg@10": v / 2}
             for s, v in [(10, 0.01), (20, 0.05), (30, 0.098), (40, 0.1), (50, 0.09)]]
    p = plateau(curve)
    assert p["valid_ndcg@10"] == 0.1 and p["total_cpu_s"] == 40 and p["levels_off_at_total_cpu_s"] == 30
    assert time_to(curve, 0.05) == 20 and time_to(curve, 0.2) is None
    assert at_time(curve, 35)["total_cpu_s"] == 30 and at_time(curve, 5) is None


def test_train_curve_records_points_and_keeps_the_best_validation_weights(tmp_path):
    import numpy as np
    import pandas as pd

    from benchmarks.recsys.budget import SelectOnServedLists, train_curve
    from recsys.data import from_frames, leave_one_out

    rng = np.random.default_rng(0)
    rows = [(u, int(rng.integers(0, 20)) if t % 2 else (u + t) % 20, t) for u in range(40) for t in range(10)]
    split = leave_one_out(from_frames(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])))
    torch.manual_seed(0)
    m = SASRec(SASRecConfig.tiny(num_items=split.num_items))
    run = train_curve(m, split, budget=1.5, kind="SASRec", max_len=8, work=tmp_path / "w", points=4)
    c = run["curve"]
    assert len(c) >= 2 and all(a["cpu_s"] < b["cpu_s"] for a, b in zip(c, c[1:]))
    assert run["valid_ndcg@10_best"] == pytest.approx(max(p["valid_ndcg@10"] for p in c), abs=1e-5)
    again = SelectOnServedLists(split, batch_size=64)(m, None)["ndcg@10"]  # the model holds the best weights
    assert again == pytest.approx(run["valid_ndcg@10_best"], abs=1e-6)
