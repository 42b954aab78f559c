"""Audio codec benchmark: CPU real-time factor against transformers' EnCodec, and held-out rate-distortion.

    python benchmarks/audio.py                                   # uses outputs/audio_codec/model if it exists
    python benchmarks/audio.py --model DIR --seconds 20 --threads 1

Speed: our codec and `transformers.EncodecModel` built at the same sample rate, frame rate (hop), codebook size and
number of codebooks, with similar widths, encode and decode the same signal in the same process; RTF = compute
seconds / audio seconds (lower is faster), reported with the ratio EnCodec / ours.
Quality: mel distance and SI-SNR of the trained model on held-out crops at 1, 2, 4, ... quantizers, plus a mu-law
PCM baseline at the full bitrate. Writes benchmarks/results/audio.json and audio.png.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import sys as _sys
from pathlib import Path as _Path

if __package__ in (None, ""):  # run as a script: the repo root, not benchmarks/, must come first on the path
    _sys.path[0] = str(_Path(__file__).resolve().parents[1])

import torch

from gentok.hub import atomic_write_json
from gentok.tokenizers.audio import AudioCodec, preset
from gentok.tokenizers.audio.data import default_audio_data
from gentok.tokenizers.audio.evaluate import collect, equal_bit_baseline, mel_distance, rate_distortion
from gentok.tokenizers.audio.hf import EncodecCodec
from gentok.tokenizers.audio.losses import si_snr

RESULTS = Path(__file__).parent / "results"


def _best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def matching_encodec(model: AudioCodec) -> EncodecCodec:
    """An EnCodec with our model's sample rate, strides, codebook size, codebook count and widths."""
    from transformers import EncodecConfig

    c = model.config
    bits = math.log2(c.quantizer.codebook_size)
    bw = c.quantizer.num_quantizers * bits * model.frame_rate / 1000
    cfg = EncodecConfig(sampling_rate=c.sample_rate, audio_channels=1, num_filters=c.channels,
                        upsampling_ratios=list(reversed(c.ratios)), hidden_size=c.dim,
                        codebook_size=c.quantizer.codebook_size, target_bandwidths=[bw], normalize=False,
                        chunk_length_s=None, num_residual_layers=len(c.dilations), dilation_growth_rate=3)
    enc = EncodecCodec.from_hf_config(cfg)
    assert enc.hop == model.hop and enc.num_quantizers == model.num_quantizers
    return enc


def speed(model: AudioCodec, seconds: float, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    x = torch.randn(1, int(seconds * model.sample_rate)) * 0.1
    rows = []
    for name, m in (("gentok AudioCodec", model), ("transformers EncodecModel", matching_encodec(model))):
        m.eval()
        codes = m.encode(x, model.sample_rate)
        enc = _best_time(lambda: m.encode(x, model.sample_rate), repeats)
        dec = _best_time(lambda: m.decode(codes), repeats)
        rows.append({"model": name, "params_m": sum(p.numel() for p in m.parameters()) / 1e6,
                     "encode_rtf": enc / seconds, "decode_rtf": dec / seconds})
    ours, peer = rows
    for key in ("encode_rtf", "decode_rtf"):
        ours[f"{key}_speedup_vs_encodec"] = peer[key] / ours[key]
    return rows


def plot(rd: list[dict], baseline: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    kbps = [r["kbps"] for r in rd]
    for ax, key, label in ((axes[0], "mel_distance", "mel distance (lower is better)"),
                           (axes[1], "si_snr", "SI-SNR dB (higher is better)")):
        ax.plot(kbps, [r[key] for r in rd], "o-", label="codec (one model, k quantizers)")
        ax.plot([baseline["kbps"]], [baseline[key]], "s", label="mu-law PCM, same bitrate")
        ax.set_xlabel("kbps")
        ax.set_title(label, fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="outputs/audio_codec/model", help="trained codec (from recipes/audio_codec.py)")
    p.add_argument("--data", default=None, help="audio folder (default: the recipe's default data)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="the recipe's seed, so the held-out split matches")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    trained = Path(args.model).is_dir()
    # from_pretrained, not gentok.load: run as a script, benchmarks/recsys.py would shadow the recsys package
    model = AudioCodec.from_pretrained(args.model) if trained else AudioCodec(preset("tiny")).eval()
    result = {"threads": args.threads, "audio_seconds": args.seconds, "model": str(args.model) if trained else None}
    result["speed"] = speed(model, args.seconds, args.repeats)
    print(f"\nCPU real-time factor ({args.threads} thread(s), {args.seconds:.0f} s of audio; lower is faster)")
    print(f"{'model':<28} {'params M':>8} {'encode RTF':>11} {'decode RTF':>11}")
    for r in result["speed"]:
        print(f"{r['model']:<28} {r['params_m']:>8.3f} {r['encode_rtf']:>11.4f} {r['decode_rtf']:>11.4f}")
    ours = result["speed"][0]
    print(f"speed-up vs EnCodec: encode x{ours['encode_rtf_speedup_vs_encodec']:.2f}, "
          f"decode x{ours['decode_rtf_speedup_vs_encodec']:.2f}")
    if trained:
        segment = 8000 // model.hop * model.hop
        _, held_out, source = default_audio_data(model.sample_rate, args.data, segment=segment, seed=args.seed)
        wav = collect(held_out)
        rd = rate_distortion(model, wav)
        base, setting = equal_bit_baseline(wav, model.sample_rate, model.bitrate())
        baseline = {"kbps": model.bitrate() / 1000, **setting, "mel_distance": mel_distance(base, wav, model.sample_rate),
                    "si_snr": float(si_snr(base, wav).mean())}
        result.update({"data": source, "held_out_crops": len(wav), "rate_distortion": rd, "baseline": baseline})
        print(f"\nheld-out rate-distortion ({source}, {len(wav)} crops)")
        print(f"{'quantizers':>10} {'kbps':>6} {'mel dist':>9} {'SI-SNR dB':>10}")
        for r in rd:
            print(f"{r['n_quantizers']:>10} {r['kbps']:>6.2f} {r['mel_distance']:>9.3f} {r['si_snr']:>10.2f}")
        print(f"{'mu-law PCM':>10} {baseline['kbps']:>6.2f} {baseline['mel_distance']:>9.3f} "
              f"{baseline['si_snr']:>10.2f}   ({setting['rate_hz']} Hz x {setting['bits']} bits)")
        RESULTS.mkdir(parents=True, exist_ok=True)
        plot(rd, baseline, RESULTS / "audio.png")
    else:
        print("\n(no trained model: run recipes/audio_codec.py first for the rate-distortion table)")
    atomic_write_json(RESULTS / "audio.json", result)
    print(f"wrote {RESULTS / 'audio.json'}")
    return result


if __name__ == "__main__":
    main()
