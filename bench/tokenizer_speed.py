"""Measures text preprocessing on BBC News (MiniLM, sequence 128, batch 64), in one run, and writes BENCHMARKS.md.

1. Examples/s and CPU per example over all BBC News articles (and over long
   documents, the articles joined ten at a time) of (a) KerasHub's
   preprocessor on the full texts, (b) the word cut kerasft used before (first
   128 words, the whole batch tokenized again in full when a row came out
   short) and (c) `kerasft.tokenizing.head_preprocessor`, in graph mode two
   ways: a `tf.data` pipeline built, traced and run once (as training and
   `kft.evaluate` make one per split) and a `tf.function` with a string input
   signature called batch by batch (as a SavedModel serves), with its set-up
   (trace and first call). Ids and padding masks are checked identical to (a).
   Figures are the best of interleaved rounds (the CPU is shared).
2. Where the time goes: KerasHub's pipeline rebuilt stage by stage from
   public TensorFlow Text ops (checked to give the tokenizer's ids), CPU
   microseconds per article on full articles and on the heads (c) tokenizes.
3. The head size: rows tokenized again in full, and speed, per characters per token.
4. End to end on the test articles: the text serving signature
   (`kerasft.serving.serving_endpoints`) before (whole model on raw
   strings) and after, the tokenizer's share of it, and the eager call the
   LiteRT predictor makes (KerasHub's pure-Python path before).

Usage: .venv/bin/python bench/tokenizer_speed.py [--rounds 5 --serve 128]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text as tf_text  # noqa: E402

import kerasft as kft  # noqa: E402
from kerasft import heads, serving, tokenizing  # noqa: E402
from bench_report import write_section  # noqa: E402

SEQUENCE_LENGTH = 128
BATCH = 64
# KerasHub 0.32's split patterns (keras_hub/src/tokenizers/word_piece_tokenizer.py), copied for the profile;
# `profile` checks the rebuilt pipeline gives the tokenizer's own ids, so a change there fails loudly.
_PUNCTUATION = r"[!-/]|[:-@]|[\[-`]|[{-~]|[\p{P}]"
_CJK = "|".join(rf"[\x{{{a}}}-\x{{{b}}}]" for a, b in [
    ("4E00", "9FFF"), ("3400", "4DBF"), ("20000", "2A6DF"), ("2A700", "2B73F"), ("2B740", "2B81F"),
    ("2B820", "2CEAF"), ("F900", "FAFF"), ("2F800", "2FA1F")])
_DELIMITERS = rf"\s|\p{{Cc}}|\p{{Cf}}|{_PUNCTUATION}|{_CJK}"
_KEPT_DELIMITERS = rf"{_PUNCTUATION}|{_CJK}"


def word_cut(preprocessor, texts, max_words):
    """kerasft's cut before `kerasft.tokenizing` (features.truncated_tokenize up to d683dd3), for comparison."""
    words = tf.strings.split(texts)
    cut = words.row_lengths() > max_words
    features = preprocessor(tf.strings.reduce_join(words[:, :max_words], axis=-1, separator=" "))
    incomplete = tf.logical_and(cut, tf.reduce_sum(tf.cast(features["padding_mask"], "int32"), axis=-1)
                                < preprocessor.sequence_length)

    def with_full_rows():
        full = preprocessor(texts)
        return {k: tf.where(incomplete[:, None], full[k], features[k]) for k in features}

    return tf.cond(tf.reduce_any(incomplete), with_full_rows, lambda: features)


def best_rates(texts, runs, rounds):
    """`{name: (examples/s of wall time, CPU microseconds per example)}`, each the best of interleaved passes.

    Every `runs[name]` is a callable built once (traced by a first, untimed pass) that processes `texts`.
    """
    wall = {name: float("inf") for name in runs}
    cpu = dict(wall)
    for run in runs.values():
        run()
    for _ in range(rounds):
        for name, run in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            wall[name] = min(wall[name], time.perf_counter() - start)
            cpu[name] = min(cpu[name], time.process_time() - start_cpu)
    return {name: (len(texts) / wall[name], cpu[name] / len(texts) * 1e6) for name in runs}


def via_tf_data(make_fn, texts):
    """One pass as `kerasft.features.preprocess` makes it: a new `tf.data` pipeline mapping `make_fn()` over
    batches, traced, set up and run."""
    def run():
        ds = tf.data.Dataset.from_tensor_slices(texts).batch(BATCH)
        return concat(list(ds.map(make_fn(), num_parallel_calls=tf.data.AUTOTUNE)))
    return run


def via_tf_function(fn, texts):
    """Calls `fn` batch by batch through a `tf.function` with a string signature, as a SavedModel serves (the
    returned pass runs after the set-up: tracing and the first call happen on the first pass)."""
    serve = tf.function(fn, input_signature=[tf.TensorSpec([None], tf.string)])
    batches = [tf.constant(texts[i:i + BATCH]) for i in range(0, len(texts), BATCH)]
    return lambda: concat([serve(b) for b in batches])


def concat(batches):
    return {k: np.concatenate([b[k].numpy() for b in batches]) for k in ("token_ids", "padding_mask")}


def profile(preprocessor, texts, rounds):
    """CPU microseconds per article of each stage of KerasHub's pipeline, on full articles and on heads.

    Returns `(rows, totals)`: `(stage, full, heads)` rows of each stage's own cost, and the cumulative
    cost of the whole preprocessor on full articles, on heads, and of `head_preprocessor` (cut included).
    """
    tokenizer = preprocessor.tokenizer
    wordpiece = tf_text.FastWordpieceTokenizer(vocab=tokenizer.get_vocabulary(), suffix_indicator="##",
                                               unknown_token=tokenizer.oov_token, no_pretokenization=True,
                                               token_out_type=tf.int32)

    def cjk(t):
        return tf.strings.regex_replace(t, _CJK, r" \0 ")

    def split(t):
        return tf_text.regex_split(cjk(t), _DELIMITERS, _KEPT_DELIMITERS)

    def fold(t):
        return tf_text.case_fold_utf8(split(t))

    stages = {"CJK spacing (regex replace)": cjk,
              "word split (regex split)": lambda t: split(t).flat_values,
              "case folding (NFKC_Casefold)": lambda t: fold(t).flat_values,
              "WordPiece": lambda t: wordpiece.tokenize(fold(t)).flat_values,
              "packing ([CLS] ... [SEP], pad to 128)": lambda t: preprocessor(t)["token_ids"]}
    batches = [tf.constant(texts[i:i + BATCH]) for i in range(0, len(texts), BATCH)]
    rebuilt = tf.function(lambda t: wordpiece.tokenize(fold(t)).merge_dims(-2, -1))
    own = tf.function(lambda t: tokenizer(t))
    for b in batches:
        if rebuilt(b).to_list() != own(b).to_list():
            raise SystemExit("the rebuilt pipeline no longer gives KerasHub's ids: update the copied patterns")
    # What the head cut hands the preprocessor: heads of the long texts, the short ones whole.
    heads = [tokenizing.cut_heads(b, tokenizing.CHARS_PER_TOKEN * SEQUENCE_LENGTH)[0] for b in batches]

    def serial(fn, inputs):
        fn = tf.function(fn)
        return lambda: [fn(b) for b in inputs]

    runs = {(name, kind): serial(fn, inputs) for name, fn in stages.items()
            for kind, inputs in (("full", batches), ("heads", heads))}
    runs["head_preprocessor"] = serial(tokenizing.head_preprocessor(preprocessor), batches)
    cost = {key: cpu for key, (_, cpu) in best_rates(texts, runs, rounds).items()}
    rows, previous = [], {"full": 0.0, "heads": 0.0}
    for name in stages:
        rows.append((name, *(cost[(name, kind)] - previous[kind] for kind in ("full", "heads"))))
        previous = {kind: cost[(name, kind)] for kind in ("full", "heads")}
    return rows, {**previous, "head_preprocessor": cost["head_preprocessor"]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", type=int, default=128, help="test articles served end to end")
    args = parser.parse_args()
    start = time.time()

    data = kft.samples.bbc_news(seed=0)
    texts = [x.numpy().decode() for split in (data.train, data.validation, data.test) for x, _ in split]
    model = kft.build_classifier("minilm_l6", data=data, sequence_length=SEQUENCE_LENGTH)
    preprocessor = model.get_layer("preprocessor")
    head = tokenizing.head_preprocessor(preprocessor)
    makers = {
        "(a) KerasHub preprocessor, whole texts": lambda: preprocessor,
        "(b) word cut (kerasft before)": lambda: (lambda t: word_cut(preprocessor, t, SEQUENCE_LENGTH)),
        "(c) head cut (kerasft.tokenizing)": lambda: tokenizing.head_preprocessor(preprocessor),
    }
    # Long documents: the articles joined ten at a time.
    documents = [" ".join(texts[i:i + 10]) for i in range(0, len(texts), 10)]

    # === 1. Speed and identity ===
    runs, setups = {}, {}
    for corpus, items in (("articles", texts), ("documents", documents)):
        for name, make in makers.items():
            if corpus == "documents" and name.startswith("(b)"):
                continue
            runs[(corpus, name, "tf.data")] = via_tf_data(make, items)
            runs[(corpus, name, "tf.function")] = via_tf_function(make(), items)
            if corpus == "articles":
                setups[name] = lambda make=make: via_tf_function(make(), texts[:BATCH])()
    references = {corpus: runs[(corpus, next(iter(makers)), "tf.data")]() for corpus in ("articles", "documents")}
    identical = {}
    for (corpus, name, mode), run in runs.items():
        same_ids = all(np.array_equal(values, references[corpus][k]) for k, values in run().items())
        identical[(corpus, name)] = identical.get((corpus, name), True) and same_ids
    rates = {**best_rates(texts, {k: v for k, v in runs.items() if k[0] == "articles"}, args.rounds),
             **best_rates(documents, {k: v for k, v in runs.items() if k[0] == "documents"}, args.rounds)}
    setup = best_rates([None], setups, 2)  # examples/s of one "example": the whole set-up
    lengths = np.array([len(t) for t in texts])
    table = ["| preprocessing | tf.data pipeline built and run once (as training, evaluate) | tf.function with a "
             "string signature, per batch (as serving) | serving set-up: trace and first batch | ids and masks "
             "identical to (a) |", "|---|---|---|---|---|"]
    for corpus, count, chars in (("articles", len(texts), lengths.mean()),
                                 ("documents", len(documents), np.mean([len(d) for d in documents]))):
        table.append(f"| **{count} {'BBC News articles' if corpus == 'articles' else 'documents of 10 articles'}"
                     f" ({chars:.0f} characters on average)** | | | | |")
        base = {mode: rates[(corpus, next(iter(makers)), mode)] for mode in ("tf.data", "tf.function")}
        for name in makers:
            if (corpus, name, "tf.data") not in runs:
                continue
            cells = [f"{rates[(corpus, name, m)][0]:.0f}/s ({rates[(corpus, name, m)][0] / base[m][0]:.2f}x), "
                     f"{rates[(corpus, name, m)][1]:.0f} us CPU ({base[m][1] / rates[(corpus, name, m)][1]:.2f}x)"
                     for m in ("tf.data", "tf.function")]
            set_up = f"{1 / setup[name][0]:.1f} s ({setup[name][1] / 1e6:.1f} s CPU)" if corpus == "articles" else ""
            table.append(f"| {name} | {' | '.join(cells)} | {set_up} | {identical[(corpus, name)]} |")

    # === 2. Profile ===
    stage_rows, totals = profile(preprocessor, texts, args.rounds)
    table += ["", "Where the time goes (CPU microseconds per article, batch by batch in a tf.function, best of the "
              "rounds; each stage timed with those before it, its own cost the difference):", "",
              "| stage | full articles (a) | heads (c) hands the preprocessor |", "|---|---|---|"]
    table += [f"| {name} | {full:.0f} | {heads_:.0f} |" for name, full, heads_ in stage_rows]
    table.append(f"| **KerasHub preprocessor, total** | **{totals['full']:.0f}** | **{totals['heads']:.0f}** |")
    table.append("| (c) head cut, total (cut + preprocessor + rows tokenized again) | "
                 f"| **{totals['head_preprocessor']:.0f}** |")

    # === 3. Head size ===
    table += ["", "Head size (tf.function per batch; rows whose head fell short are tokenized again in full):", "",
              "| characters per token (head) | rows tokenized again | examples/s | CPU us per article |",
              "|---|---|---|---|"]
    sweep = {per_token: via_tf_function(tokenizing.head_preprocessor(preprocessor, per_token * SEQUENCE_LENGTH), texts)
             for per_token in (4, 5, 6, 8, 12)}
    for per_token, (rate, cpu) in best_rates(texts, sweep, args.rounds).items():
        head_chars = per_token * SEQUENCE_LENGTH
        again = via_tf_function(lambda t, n=head_chars: _short_heads(preprocessor, t, n), texts)()["token_ids"].sum()
        default = " (default)" if per_token == tokenizing.CHARS_PER_TOKEN else ""
        table.append(f"| {per_token} ({head_chars}){default} | {again} of {len(texts)} | {rate:.0f}/s | {cpu:.0f} |")

    # === 4. End to end ===
    test = [x.numpy().decode() for x, _ in data.test][:args.serve]
    class_names, task = data.class_names, heads.task_of(model)
    after = serving.serving_endpoints(model, class_names, task)["serving_default"]
    before = tf.function(lambda t: serving.serving_outputs(model(t, training=False), class_names, task),
                         input_signature=[tf.TensorSpec([None], tf.string)])
    batches = [tf.constant(test[i:i + BATCH]) for i in range(0, len(test), BATCH)]
    serve = {name: (lambda f=f: [f(b)["probabilities"].numpy() for b in batches])
             for name, f in (("before", before), ("after", after))}
    serve_rates = best_rates(test, {**serve, "tokenize": via_tf_function(preprocessor, test)}, 2)
    same = np.allclose(np.concatenate(serve["before"]()), np.concatenate(serve["after"]()), atol=1e-6)
    eager_texts = tf.constant(test[:64])
    eager = best_rates(test[:64], {"python": lambda: preprocessor(eager_texts), "head": lambda: head(eager_texts)}, 2)
    table += ["", f"End to end on {len(test)} test articles (batch {BATCH}):", "",
              "| measure | value |", "|---|---|",
              f"| text serving signature, whole model on raw strings (before) | {serve_rates['before'][0]:.1f}/s, "
              f"{serve_rates['before'][1] / 1e3:.0f} ms CPU per article |",
              f"| text serving signature, head cut then network (after) | {serve_rates['after'][0]:.1f}/s, "
              f"{serve_rates['after'][1] / 1e3:.0f} ms CPU per article "
              f"({serve_rates['before'][1] / serve_rates['after'][1]:.2f}x less CPU; same probabilities: {same}) |",
              f"| KerasHub tokenizing alone, whole articles | {serve_rates['tokenize'][0]:.0f}/s: "
              f"{serve_rates['tokenize'][1] / serve_rates['before'][1]:.1%} of the serving CPU time |",
              f"| eager call (the LiteRT predictor), KerasHub's pure-Python path (before) "
              f"| {eager['python'][0]:.0f}/s |",
              f"| eager call, head_preprocessor (a tf.function) (after) | {eager['head'][0]:.0f}/s "
              f"({eager['head'][0] / eager['python'][0]:.0f}x) |"]

    note = (f"MiniLM-L6 tokenizer (KerasHub BertTextClassifierPreprocessor), all {len(texts)} BBC News articles "
            f"({lengths.mean():.0f} characters on average, {np.median(lengths):.0f} median, {lengths.max()} max), "
            f"sequence {SEQUENCE_LENGTH}, batch {BATCH}, best of {args.rounds} interleaved rounds; "
            f"whole script {time.time() - start:.0f} s, load average {os.getloadavg()[0]:.1f} at its end")
    write_section("Tokenizer speed (bench/tokenizer_speed.py)", "\n".join(table), note)
    print("\n".join(table))
    if not all(identical.values()) or not same:
        raise SystemExit("token ids or predictions differ")


def _short_heads(preprocessor, texts, head_chars):
    """1 per row whose head does not fill the sequence (so it is tokenized again), as `token_ids` for `concat`."""
    cut, was_cut = tokenizing.cut_heads(texts, head_chars)
    unfilled = tf.reduce_sum(tf.cast(preprocessor(cut)["padding_mask"], "int32"), -1) < preprocessor.sequence_length
    flag = tf.cast(was_cut & unfilled, "int32")
    return {"token_ids": flag, "padding_mask": flag}


if __name__ == "__main__":
    main()
