"""Audio codec benchmark: CPU real-time factor against transformers' EnCodec, and held-out rate-distortion.

    python -m benchmarks.audio                                   # uses outputs/audio_codec/model if it exists
    python -m benchmarks.audio --model DIR --seconds 20 --threads 1

Speed: our codec and `transformers.EncodecModel` built at the same sample rate, frame rate (hop), codebook size and
number of codebooks, with similar widths, encode and decode the same signal in the same process; RTF = compute
seconds / audio seconds (lower is faster), reported with the ratio EnCodec / ours.
Quality: mel distance and SI-SNR of the trained model on held-out crops at 1, 2, 4, ... quantizers, plus a mu-law
PCM baseline at the full bitrate. Writes benchmarks/results/audio.json and audio.png.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from gentok.losses.audio import si_snr

import gentok
from benchmarks.common import best_time, parser, print_table, pyplot, save_figure, write_json
from gentok.data.audio import default_audio_data
from gentok.evaluation.audio import collect, equal_bit_baseline, mel_distance, rate_distortion
from gentok.tokenizers.audio import AudioCodec, preset
from gentok.pretrained.audio_codecs import EncodecCodec


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
        tokens = m.encode(x, sample_rate=model.sample_rate)
        enc = best_time(lambda: m.encode(x, sample_rate=model.sample_rate), repeats)[0]
        dec = best_time(lambda: m.decode(tokens), repeats)[0]
        rows.append({"model": name, "params_m": sum(p.numel() for p in m.parameters()) / 1e6,
                     "encode_rtf": enc / seconds, "decode_rtf": dec / seconds})
    ours, peer = rows
    for key in ("encode_rtf", "decode_rtf"):
        ours[f"{key}_speedup_vs_encodec"] = peer[key] / ours[key]
    return rows


def plot(rd: list[dict], baseline: dict, path: Path):
    fig, axes = pyplot().subplots(1, 2, figsize=(9, 3.2))
    kbps = [r["kbps"] for r in rd]
    for ax, key, label in ((axes[0], "mel_distance", "mel distance (lower is better)"),
                           (axes[1], "si_snr", "SI-SNR dB (higher is better)")):
        ax.plot(kbps, [r[key] for r in rd], "o-", label="codec (one model, k quantizers)")
        ax.plot([baseline["kbps"]], [baseline[key]], "s", label="mu-law PCM, same bitrate")
        ax.set_xlabel("kbps")
        ax.set_title(label, fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def main(argv=None):
    p = parser(__doc__, out="audio.json")
    p.add_argument("--model", default="outputs/audio_codec/model", help="trained codec (from recipes/audio_codec.py)")
    p.add_argument("--data", default=None, help="audio folder (default: the recipe's default data)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="the recipe's seed, so the held-out split matches")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    trained = Path(args.model).is_dir()
    model = gentok.load(args.model).eval() if trained else AudioCodec(preset("tiny")).eval()
    result = {"threads": args.threads, "audio_seconds": args.seconds, "model": str(args.model) if trained else None}
    result["speed"] = speed(model, args.seconds, args.repeats)
    print_table(result["speed"], ["model", "params_m", "encode_rtf", "decode_rtf"],
                title=f"\nCPU real-time factor ({args.threads} thread(s), {args.seconds:.0f} s of audio; lower is faster)")
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
        pcm = {"n_quantizers": f"mu-law PCM ({setting['rate_hz']} Hz x {setting['bits']} bits)", **baseline}
        print_table(rd + [pcm], ["n_quantizers", "kbps", "mel_distance", "si_snr"],
                    title=f"\nheld-out rate-distortion ({source}, {len(wav)} crops; SI-SNR in dB)")
        plot(rd, baseline, Path(args.out).with_suffix(".png"))
    else:
        print("\n(no trained model: run recipes/audio_codec.py first for the rate-distortion table)")
    print(f"wrote {write_json(args.out, result)}")
    return result


if __name__ == "__main__":
    main()
