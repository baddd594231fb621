"""The randomisation test's model reuses the trained model's trunk
(xai_platform/models/shared_trunk.py): the same maps and predictions as without it, fewer
evaluations of the trunk, and a clear note when it cannot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import needs_bf16, needs_torch
from test_fast_forward import _manager, _planes

pytestmark = needs_torch


def _pair(tmp_path: Path, model_id: str = "tiny-torch-xray", n_layers: int = 2):
    handle = _manager(tmp_path).get(model_id)
    assert handle.forward_path.fast
    return handle, handle.randomized(n_layers, seed=0), handle.randomized(n_layers, seed=0)


@pytest.mark.parametrize("model_id", ["tiny-torch-xray", "tiny-torch-audio"])
@pytest.mark.parametrize("method,params", [("lime", {"num_samples": 96}),
                                           ("shap", {"n_evaluations": 96, "estimator": "kernel"}),
                                           ("shap", {"n_evaluations": 96})])
def test_randomised_maps_are_the_same_with_the_shared_trunk(tmp_path, model_id, method, params):
    """LIME and Kernel SHAP re-run the trained model's coalitions (the same seed): every row's
    trunk comes from the cache. SHAP's partition estimator picks its coalitions from the
    randomised model's own outputs: the rows it shares with the trained run come from the
    cache, the others run the whole graph, and the map is the one without sharing."""
    from xai_platform import explainers
    from xai_platform.models.shared_trunk import HeadTwin, share_trunk

    handle, plain, shared = _pair(tmp_path, model_id)
    note = share_trunk(handle, shared, max_head_share=1.0)
    assert note.startswith("shares the trained model's trunk"), note
    assert note in shared.forward_path.reason
    x = _planes(handle, 1)[0]
    explainers.run(method, handle, x, target=1, params=params, seed=3)  # fills the cache
    expected = explainers.run(method, plain, x, target=1, params=params, seed=3)
    got = explainers.run(method, shared, x, target=1, params=params, seed=3)
    assert isinstance(shared._fast, HeadTwin)
    if got.params.get("estimator") == "partition":
        assert shared._fast.evaluations_from_cache >= 2  # at least f(none) and f(all)
    else:
        assert shared._fast.evaluations_from_cache >= got.attribution.n_evaluations - 2
    np.testing.assert_allclose(got.attribution.heatmap, expected.attribution.heatmap,
                               atol=1e-6, rtol=0)


def test_batches_the_trained_model_never_saw_run_the_whole_graph(tmp_path):
    from xai_platform.models.shared_trunk import share_trunk

    handle, plain, shared = _pair(tmp_path)
    share_trunk(handle, shared, max_head_share=1.0)
    x = _planes(handle, 5, seed=9)
    np.testing.assert_allclose(shared.predict(x), plain.predict(x), atol=1e-6, rtol=0)
    assert shared._fast.evaluations_from_cache == 0
    handle.predict(x)  # now the trunk has seen this batch
    np.testing.assert_allclose(shared.predict(x), plain.predict(x), atol=1e-6, rtol=0)
    assert shared._fast.evaluations_from_cache == 5
    # a batch of seen and unseen rows: the head on the seen ones, the whole graph on the rest
    mixed = np.concatenate([_planes(handle, 3, seed=11), x[[3, 0]]])
    np.testing.assert_allclose(shared.predict(mixed), plain.predict(mixed), atol=1e-6, rtol=0)
    assert shared._fast.evaluations_from_cache == 7
    # the trained model's own predictions are unchanged by recording its frontier
    np.testing.assert_allclose(handle.predict(x), handle._predict_batch(x), atol=1e-5, rtol=0)


def test_every_session_of_the_split_lets_its_idle_threads_sleep(tmp_path):
    """The trained graph, the copy's head and its whole graph run in turn within one request:
    threads that spin after a run would take the cores from the next session."""
    from xai_platform.models.shared_trunk import share_trunk

    handle, _, shared = _pair(tmp_path)
    share_trunk(handle, shared, max_head_share=1.0)
    sessions = [handle._fast.session, shared._fast.session, shared._fast.head]
    assert len({id(s) for s in sessions}) == 3
    for s in sessions:
        entry = s.get_session_options().get_session_config_entry
        assert entry("session.intra_op.allow_spinning") == "0"


def test_the_comparison_page_reruns_lime_on_the_cached_trunk(tmp_path, monkeypatch):
    """As the XAI Comparison page calls it (``ui.comparison.compare``, LIME with the
    randomisation test): the randomised model is built before LIME runs, and LIME's re-run on
    it takes every batch's trunk from the cache; the score is the one without sharing."""
    from xai_platform.evaluation.metrics import RANDOMIZE_LAYERS, randomization_test
    from xai_platform.models import shared_trunk
    from xai_platform.service import Service
    from xai_platform.ui.comparison import compare

    monkeypatch.setattr(shared_trunk, "MAX_HEAD_SHARE", 1.0)  # a tiny net's head is not cheap
    manager = _manager(tmp_path)
    service = Service(manager)
    from xai_platform.service import Session

    session = Session()
    handle = manager.get("tiny-torch-xray")
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray((_planes(handle, 1)[0] * 255).astype(np.uint8)).save(image)
    [(_, _, _, expl, card)] = list(compare(service, session, "xray", None, str(image),
                                           "tiny-torch-xray", ["lime"], 0,
                                           metrics=("randomization",)))
    randomized = service.randomized("tiny-torch-xray")
    assert isinstance(randomized._fast, shared_trunk.HeadTwin)
    assert randomized._fast.evaluations_from_cache >= expl.n_evaluations - 1
    plain = handle.randomized(RANDOMIZE_LAYERS, seed=0)  # not shared
    expected = randomization_test(handle, service.analyse(session, str(image),
                                                          "tiny-torch-xray").prepared.planes[0],
                                  "lime", target=expl.target, params=expl.params, seed=expl.seed,
                                  heatmap=expl.heatmap, randomized=plain)
    assert card.values["randomization_rho"] == pytest.approx(expected["spearman"], abs=1e-6)
    session.close()


def test_no_trunk_when_the_first_layer_is_reinitialised(tmp_path):
    from xai_platform.models.shared_trunk import share_trunk

    handle = _manager(tmp_path).get("tiny-torch-xray")
    n_layers = sum(1 for m in handle.net.modules() if hasattr(m, "reset_parameters")
                   and any(True for _ in m.parameters(recurse=False)))
    everything = handle.randomized(n_layers, seed=1)  # seed 0 rebuilds the tiny model itself
    note = share_trunk(handle, everything, max_head_share=1.0)
    assert note == ("trunk not shared: a re-initialised layer reads the network input: no "
                    "trunk to share")
    assert type(everything._fast).__name__ == "OnnxHandle"


def test_a_split_that_changes_the_logits_is_not_used(tmp_path, monkeypatch):
    from xai_platform.models import shared_trunk

    handle, plain, shared = _pair(tmp_path)
    monkeypatch.setattr(shared_trunk, "PARITY", -1.0)  # no difference passes
    note = shared_trunk.share_trunk(handle, shared, max_head_share=1.0)
    assert note.startswith("trunk not shared: the split changes the logits by")
    assert not isinstance(shared._fast, shared_trunk.HeadTwin)
    assert not isinstance(handle._fast, shared_trunk.RecordingTwin)


def test_a_head_that_costs_too_much_is_not_shared(tmp_path):
    from xai_platform.models.shared_trunk import RecordingTwin, share_trunk

    handle, plain, shared = _pair(tmp_path)
    note = share_trunk(handle, shared, max_head_share=0.0)
    assert "too much to gain" in note
    assert not isinstance(handle._fast, RecordingTwin)


def test_framework_models_are_left_alone(tmp_path):
    from xai_platform.models.shared_trunk import share_trunk

    handle = _manager(tmp_path, fast_forward=False).get("tiny-torch-xray")
    shared = handle.randomized(2, seed=0)
    assert share_trunk(handle, shared).startswith("trunk not shared: both models must have "
                                                  "exact ONNX Runtime graphs")


def test_the_activation_cache_keeps_the_newest_batches_within_its_bytes():
    from xai_platform.models.shared_trunk import ActivationCache, batch_key

    cache = ActivationCache(max_bytes=3 * 400)
    batches = [np.full((10, 10), i, np.float32) for i in range(5)]  # 400 bytes each
    for b in batches:
        cache.put(batch_key(b), [b])
    assert len(cache) == 3 and cache.bytes == 1200
    assert cache.get(batch_key(batches[0])) is None
    np.testing.assert_array_equal(cache.get(batch_key(batches[4]))[0], batches[4])
    assert batch_key(batches[1]) != batch_key(batches[1].reshape(100))  # the shape counts
    assert cache.hits == 1 and cache.misses == 1


def test_the_activation_cache_finds_a_batch_by_its_rows():
    from xai_platform.models.shared_trunk import ActivationCache

    cache = ActivationCache(max_bytes=10 ** 6)
    batch = np.arange(4 * 6, dtype=np.float32).reshape(4, 2, 3)
    frontier = [batch * 10, batch.sum(axis=(1, 2))]  # one row per input each
    cache.put_batch(batch, frontier)
    assert cache.per_row and len(cache) == 4
    asked = np.stack([batch[2], batch[0] + 100, batch[0]])  # seen, unseen, seen
    found, hit = cache.get_batch(asked)
    assert hit.tolist() == [0, 2]
    np.testing.assert_array_equal(found[0], frontier[0][[2, 0]])
    np.testing.assert_array_equal(found[1], frontier[1][[2, 0]])
    assert cache.get_batch(batch[1:2] + 7)[0] is None
    shape = ActivationCache(max_bytes=10 ** 6)  # a frontier tensor not per row: whole batches
    shape.put_batch(batch, [batch, np.array([4, 2, 3])])
    assert shape.per_row is False and len(shape) == 1
    assert shape.get_batch(batch)[1].tolist() == [0, 1, 2, 3]
    assert shape.get_batch(batch[:3])[0] is None


def _bf16_pair(tmp_path: Path, n_layers: int = 2):
    handle = _manager(tmp_path, app={"forward_precision": "bf16"}).get("tiny-torch-xray")
    assert handle.forward_path.engine == "openvino" and handle.forward_path.reduced
    return handle, handle.randomized(n_layers, seed=0), handle.randomized(n_layers, seed=0)


@needs_bf16
def test_under_bf16_the_trunk_runs_once_and_the_copy_stays_within_the_bf16_bound(tmp_path):
    """With ``--bf16`` the trained model's OpenVINO graph also returns the frontier; the copy's
    head (float32) on it gives what the copy's own graphs give, within the bf16 bound, and a
    batch the trunk never saw runs the copy's own bf16 graph."""
    from xai_platform import explainers
    from xai_platform.models.reduced_precision import TOLERANCE, OpenVinoHandle
    from xai_platform.models.shared_trunk import HeadTwin, RecordingOpenVino, share_trunk

    handle, plain, shared = _bf16_pair(tmp_path)
    before = handle.predict(_planes(handle, 6, seed=4))
    note = share_trunk(handle, shared, max_head_share=1.0)
    assert note.startswith("shares the trained model's trunk") and "bf16" in note, note
    assert isinstance(handle._fast, RecordingOpenVino) and isinstance(shared._fast, HeadTwin)
    assert type(handle._exact).__name__ == "OnnxHandle"  # the exact twin stays exact
    x = _planes(handle, 6, seed=4)
    np.testing.assert_allclose(handle.predict(x), before, atol=1e-6, rtol=0)

    new = _planes(handle, 3, seed=8)  # never seen by the trunk: the copy's bf16 graph
    assert isinstance(plain._forward_engine(), OpenVinoHandle)
    np.testing.assert_allclose(shared.predict(new), plain.predict(new), atol=1e-6, rtol=0)
    assert shared._fast.evaluations_from_cache == 0

    lime = {"num_samples": 64}
    explainers.run("lime", handle, x[0], target=1, params=lime, seed=3)  # fills the cache
    got = explainers.run("lime", shared, x[0], target=1, params=lime, seed=3)
    assert shared._fast.evaluations_from_cache >= got.attribution.n_evaluations - 2
    np.testing.assert_allclose(shared.predict(x), plain._exact._predict_batch(x),
                               atol=TOLERANCE, rtol=0)


@needs_bf16
def test_under_bf16_a_split_beyond_the_bound_is_not_used(tmp_path, monkeypatch):
    from xai_platform.models import shared_trunk
    from xai_platform.models.reduced_precision import OpenVinoHandle

    handle, plain, shared = _bf16_pair(tmp_path)
    monkeypatch.setattr(shared_trunk, "TOLERANCE", -1.0)  # no difference passes
    note = shared_trunk.share_trunk(handle, shared, max_head_share=1.0)
    assert note.startswith("trunk not shared: in bf16 the split moves probabilities"), note
    assert type(handle._fast) is OpenVinoHandle and type(shared._fast) is OpenVinoHandle
    assert note in shared.forward_path.reason
