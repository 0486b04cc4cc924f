#!/usr/bin/env python3
"""The C LongBench v1 metrics against the official Python definitions on generated
prediction/answer pairs (a few hundred per metric, plus task-level scores).

The reference functions below are LongBench v1's metrics.py and eval.py's scorer,
transcribed; they call the same packages the official code calls: jieba (python3-jieba),
fuzzywuzzy (python3-fuzzywuzzy, forced onto difflib: python-Levenshtein is hidden, as on a
machine without it) and rouge (pltrdy, PyPI 1.0.1). Scores must be equal as floats.
The rouge package raises RecursionError on long sentences; the reference runs with the
recursion limit shifted so that its call depth equals eval.py's (scorer called from module
level), which is what the C code models.
Needs the kw_eval_cli driver ($KW_EVAL_CLI)."""
import json
import os
import random
import re
import string
import subprocess
import sys
import tempfile
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pyenv_check import require  # noqa: E402

sys.modules["Levenshtein"] = None  # fuzzywuzzy falls back to difflib.SequenceMatcher
require(["jieba", "fuzzywuzzy", "rouge"])
import difflib  # noqa: E402
import warnings  # noqa: E402

warnings.simplefilter("ignore")
import jieba  # noqa: E402
from fuzzywuzzy import fuzz  # noqa: E402
from rouge import Rouge  # noqa: E402

jieba.setLogLevel(60)
assert fuzz.SequenceMatcher is difflib.SequenceMatcher, "fuzzywuzzy is using Levenshtein"

# ---------------------------------------------------------------- official definitions


def normalize_answer(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def normalize_zh_answer(s):
    def white_space_fix(text):
        return "".join(text.split())

    def remove_punc(text):
        cn_punctuation = ("\uff01\uff1f\uff61\u3002\uff02\uff03\uff04\uff05\uff06\uff07\uff08"
                          "\uff09\uff0a\uff0b\uff0c\uff0d\uff0f\uff1a\uff1b\uff1c\uff1d\uff1e"
                          "\uff20\uff3b\uff3c\uff3d\uff3e\uff3f\uff40\uff5b\uff5c\uff5d\uff5e"
                          "\uff5f\uff60\uff62\uff63\uff64\u3001\u3003\u300b\u300c\u300d\u300e"
                          "\u300f\u3010\u3011\u3014\u3015\u3016\u3017\u3018\u3019\u301a\u301b"
                          "\u301c\u301d\u301e\u301f\u3030\u303e\u303f\u2013\u2014\u2018\u2019"
                          "\u201b\u201c\u201d\u201e\u201f\u2026\u2027\ufe4f.")
        all_punctuation = set(string.punctuation + cn_punctuation)
        return "".join(ch for ch in text if ch not in all_punctuation)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_punc(lower(s)))


def count_score(prediction, ground_truth, **kwargs):
    numbers = re.findall(r"\d+", prediction)
    right_num = 0
    for number in numbers:
        if str(number) == str(ground_truth):
            right_num += 1
    final_score = 0.0 if len(numbers) == 0 else right_num / len(numbers)
    return float(final_score)


def retrieval_score(prediction, ground_truth, **kwargs):
    pattern = r"Paragraph (\d+)"
    matches = re.findall(pattern, ground_truth)
    ground_truth_id = matches[0]
    numbers = re.findall(r"\d+", prediction)
    right_num = 0
    for number in numbers:
        if str(number) == str(ground_truth_id):
            right_num += 1
    final_score = 0.0 if len(numbers) == 0 else right_num / len(numbers)
    return float(final_score)


def retrieval_zh_score(prediction, ground_truth, **kwargs):
    pattern = r"\u6bb5\u843d(\d+)"
    matches = re.findall(pattern, ground_truth)
    ground_truth_id = matches[0]
    numbers = re.findall(r"\d+", prediction)
    right_num = 0
    for number in numbers:
        if str(number) == str(ground_truth_id):
            right_num += 1
    final_score = 0.0 if len(numbers) == 0 else right_num / len(numbers)
    return float(final_score)


def code_sim_score(prediction, ground_truth, **kwargs):
    all_lines = prediction.lstrip("\n").split("\n")
    prediction = ""
    for line in all_lines:
        if ("`" not in line) and ("#" not in line) and ("//" not in line):
            prediction = line
            break
    return fuzz.ratio(prediction, ground_truth) / 100


def classification_score(prediction, ground_truth, **kwargs):
    em_match_list = []
    all_classes = kwargs["all_classes"]
    for class_name in all_classes:
        if class_name in prediction:
            em_match_list.append(class_name)
    for match_term in em_match_list:
        if match_term in ground_truth and match_term != ground_truth:
            em_match_list.remove(match_term)
    if ground_truth in em_match_list:
        score = 1.0 / len(em_match_list)
    else:
        score = 0.0
    return score


def rouge_score(prediction, ground_truth, **kwargs):
    rouge = Rouge()
    try:
        scores = rouge.get_scores([prediction], [ground_truth], avg=True)
    except:  # noqa: E722  (the official code catches everything)
        return 0.0
    return scores["rouge-l"]["f"]


def rouge_zh_score(prediction, ground_truth, **kwargs):
    prediction = " ".join(list(jieba.cut(prediction, cut_all=False)))
    ground_truth = " ".join(list(jieba.cut(ground_truth, cut_all=False)))
    score = rouge_score(prediction, ground_truth)
    return score


def f1_score(prediction, ground_truth, **kwargs):
    common = Counter(prediction) & Counter(ground_truth)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction)
    recall = 1.0 * num_same / len(ground_truth)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def qa_f1_score(prediction, ground_truth, **kwargs):
    normalized_prediction = normalize_answer(prediction)
    normalized_ground_truth = normalize_answer(ground_truth)
    prediction_tokens = normalized_prediction.split()
    ground_truth_tokens = normalized_ground_truth.split()
    return f1_score(prediction_tokens, ground_truth_tokens)


def qa_f1_zh_score(prediction, ground_truth, **kwargs):
    prediction_tokens = list(jieba.cut(prediction, cut_all=False))
    ground_truth_tokens = list(jieba.cut(ground_truth, cut_all=False))
    prediction_tokens = [normalize_zh_answer(token) for token in prediction_tokens]
    ground_truth_tokens = [normalize_zh_answer(token) for token in ground_truth_tokens]
    prediction_tokens = [token for token in prediction_tokens if len(token) > 0]
    ground_truth_tokens = [token for token in ground_truth_tokens if len(token) > 0]
    return f1_score(prediction_tokens, ground_truth_tokens)


dataset2metric = {
    "narrativeqa": qa_f1_score, "qasper": qa_f1_score, "multifieldqa_en": qa_f1_score,
    "multifieldqa_zh": qa_f1_zh_score, "hotpotqa": qa_f1_score, "2wikimqa": qa_f1_score,
    "musique": qa_f1_score, "dureader": rouge_zh_score, "gov_report": rouge_score,
    "qmsum": rouge_score, "multi_news": rouge_score, "vcsum": rouge_zh_score,
    "trec": classification_score, "triviaqa": qa_f1_score, "samsum": rouge_score,
    "lsht": classification_score, "passage_retrieval_en": retrieval_score,
    "passage_count": count_score, "passage_retrieval_zh": retrieval_zh_score,
    "lcc": code_sim_score, "repobench-p": code_sim_score,
}


def scorer(dataset, predictions, answers, all_classes):
    total_score = 0.
    for (prediction, ground_truths) in zip(predictions, answers):
        score = 0.
        if dataset in ["trec", "triviaqa", "samsum", "lsht"]:
            prediction = prediction.lstrip('\n').split('\n')[0]
        for ground_truth in ground_truths:
            score = max(score, dataset2metric[dataset](prediction, ground_truth,
                                                       all_classes=all_classes))
        total_score += score
    return round(100 * total_score / len(predictions), 2)


# ------------------------------------------------------- eval.py's call depth for scorer


def depth():
    f, n = sys._getframe(1), 0
    while f:
        n, f = n + 1, f.f_back
    return n


def as_eval_py(level, fn, *args, **kw):
    """Calls fn with the recursion budget it has in eval.py, where its frame is the
    level-th (module code 1, scorer 2, a metric function 3)."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(old + depth() + 1 - level)
    try:
        return fn(*args, **kw)
    finally:
        sys.setrecursionlimit(old)


METRIC_FN = {"qa_f1": qa_f1_score, "qa_f1_zh": qa_f1_zh_score, "rouge": rouge_score,
             "rouge_zh": rouge_zh_score, "classification": classification_score,
             "retrieval": retrieval_score, "retrieval_zh": retrieval_zh_score,
             "count": count_score, "code_sim": code_sim_score}
ROUGE_METRICS = ("rouge", "rouge_zh")


def ref_metric(name, pred, ans, classes):
    return as_eval_py(3, METRIC_FN[name], pred, ans, all_classes=classes)


# ---------------------------------------------------------------------- generated cases

EN_WORDS = ("the a an The AN cat dog Paris river bank of in on is was and to 1990 42 "
            "3.5 U.S. don't it's co-op e-mail naïve café İstanbul ÉCOLE straße "
            "Hello, world! (note) [x] {y} \"quoted\" 'single' semi; colon: dash- "
            "theory another than anthem a1 _the_ the_ the's \u039f\u0394\u039f\u03a3 \u03a3 "
            "\u03a3\u0391\u03a3. \u03a3\u0391'\u03a3 \u00b2\u00bd \u2160x").split(" ")
SPACES = [" ", " ", " ", "  ", "\t", "\n", "\u3000", "\xa0", "\u2003", "\r\n"]


def rand_text(rng, words, k_max, seps=SPACES):
    k = rng.randint(0, k_max)
    return "".join(rng.choice(words) + rng.choice(seps) for _ in range(k)).rstrip(
        "" if rng.random() < 0.3 else " ")


def zh_snippets(rng):
    path = os.path.join(os.environ.get("KVWEAVE_DATA", "../shared/data"), "longbench",
                        "multifieldqa_zh.jsonl")
    snips = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                snips += rec["answers"]
                ctx = rec["context"]
                for _ in range(5):
                    a = rng.randrange(max(1, len(ctx) - 60))
                    snips.append(ctx[a:a + rng.randint(1, 60)])
    return snips or ["\u5317\u4eac\u5927\u5b66", "\u6e05\u534e\u5927\u5b66\u3002"]


def gen_cases(n_per=400, seed=1234):
    rng = random.Random(seed)
    zh = zh_snippets(rng)
    cases = []

    def add(metric, pred, ans, classes=None):
        cases.append({"metric": metric, "pred": pred, "answer": ans,
                      "all_classes": classes})

    for _ in range(n_per):  # qa_f1
        ans = rand_text(rng, EN_WORDS, 6)
        pred = rand_text(rng, EN_WORDS, 12) if rng.random() < 0.6 else \
            ans.upper() + rng.choice(["", " the", ".", " and more"])
        add("qa_f1", pred, ans)
    for _ in range(n_per):  # qa_f1_zh
        ans = rng.choice(zh)
        r = rng.random()
        pred = (rng.choice(zh) + ans if r < 0.4 else ans + "\u3002" if r < 0.6 else
                rand_text(rng, EN_WORDS, 5) + rng.choice(zh))
        add("qa_f1_zh", pred, ans)
    rwords = "alpha beta gamma delta eps . . , Beta the a of x y z".split(" ")
    for i in range(n_per):  # rouge
        ans = rand_text(rng, rwords, 40, [" ", " ", ".", ". ", "  ", "\n"])
        pred = rand_text(rng, rwords, 40, [" ", " ", ".", ". ", "  ", "\n"])
        if i % 50 == 0:
            pred, ans = ".", ans
        if i % 50 == 1:
            pred, ans = " . ", "..."
        if i % 50 == 2:  # the recursion limit of the LCS reconstruction
            k = [989, 990, 991, 992, 1200, 500][(i // 50) % 6]
            ans = " ".join("w%d" % (j % 700) for j in range(k))
            pred = ans if (i // 300) % 2 == 0 else ans + " extra"
        add("rouge", pred, ans)
    for i in range(n_per // 2):  # rouge_zh
        ans = "".join(rng.choice(zh) for _ in range(rng.randint(1, 4)))
        pred = "".join(rng.choice(zh) for _ in range(rng.randint(0, 4)))
        if i % 25 == 0:  # jieba cuts each pair into one word: 2 * k - 1 words
            ans = pred = " ".join(["\u4f60\u597d"] * [988, 989, 990, 300][(i // 25) % 4])
        add("rouge_zh", pred, ans)
    classes = ["Abbreviation", "Expression abbreviated", "Animal", "Other animal", "Food",
               "Other", "Other location", "City", "Country", "Description", "Definition",
               "Description of a person", "Individual", "Title of a person", "Date", "Number"]
    for _ in range(n_per):  # classification
        gt = rng.choice(classes)
        pred = " ".join(rng.choice(classes + ["is", "Type:"]) for _ in range(rng.randint(0, 5)))
        add("classification", pred, gt, classes)
    for _ in range(n_per // 2):  # retrieval / zh
        k = rng.randint(1, 30)
        pred = " ".join(rng.choice(["Paragraph %d" % rng.randint(1, 30), "%d" % k, "and",
                                    "\uff11\uff12", "\u6bb5\u843d%d" % k, "x7y"])
                        for _ in range(rng.randint(0, 4)))
        add("retrieval", pred, "Paragraph %d" % k)
        add("retrieval_zh", pred, "\u6bb5\u843d%d" % k)
    for _ in range(n_per):  # count
        k = rng.randint(1, 20)
        pred = " ".join(str(rng.randint(0, 25)) if rng.random() < 0.6 else rng.choice(
            ["There are", "unique", "paragraphs", "\u0663"]) for _ in range(rng.randint(0, 6)))
        add("count", pred, str(k))
    code = ["def f(x):", "    return x + 1", "# comment", "// c comment", "```python",
            "int main() {", "x = y // 2", "print('hi')", "", "\tself.a = a", "}"]
    for i in range(n_per):  # code_sim
        gt = rng.choice(code[1:3] + code[5:])
        lines = [rng.choice(code) for _ in range(rng.randint(0, 4))]
        pred = "\n" * rng.randint(0, 2) + "\n".join(lines)
        if i % 10 == 0:  # long lines: autojunk (len(b) >= 200) and popular elements
            gt = "".join(rng.choice("ab c(),x=") for _ in range(rng.randint(150, 400)))
            pred = "".join(rng.choice("ab c(),x=y") for _ in range(rng.randint(150, 400)))
        add("code_sim", pred, gt)
    return cases


def gen_tasks(seed=99):
    rng = random.Random(seed)
    out = []
    zh = zh_snippets(rng)
    for task in ["triviaqa", "narrativeqa", "trec", "samsum", "multifieldqa_zh", "lcc",
                 "passage_count", "passage_retrieval_en"]:
        for _ in range(10):
            n = rng.randint(1, 12)
            preds, answers = [], []
            for _ in range(n):
                if task == "multifieldqa_zh":
                    answers.append([rng.choice(zh) for _ in range(rng.randint(1, 2))])
                    preds.append(rng.choice(zh) + answers[-1][0][:3])
                elif task == "passage_retrieval_en":
                    answers.append(["Paragraph %d" % rng.randint(1, 9)])
                    preds.append("Paragraph %d\nParagraph 2" % rng.randint(1, 9))
                elif task == "passage_count":
                    answers.append([str(rng.randint(1, 9))])
                    preds.append("%d %d" % (rng.randint(1, 9), rng.randint(1, 9)))
                elif task == "trec":
                    answers.append(["Animal"])
                    preds.append("\n\nAnimal\nOther animal")
                else:
                    answers.append([rand_text(rng, EN_WORDS, 5) for _ in range(2)])
                    preds.append("\n" + rand_text(rng, EN_WORDS, 8) + "\n" +
                                 rand_text(rng, EN_WORDS, 3))
            out.append({"task": task, "preds": preds, "answers": answers,
                        "all_classes": ["Animal", "Other animal", "Food"]})
    return out


def run_cli(mode, cases):
    with tempfile.TemporaryFile("w+", encoding="utf-8") as tf:
        for c in cases:
            tf.write(json.dumps(c) + "\n")
        tf.seek(0)
        res = subprocess.run([os.environ["KW_EVAL_CLI"], mode], stdin=tf,
                             capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit("kw_eval_cli %s failed (%d): %s" % (mode, res.returncode,
                                                              res.stderr))
    lines = res.stdout.splitlines()
    if len(lines) != len(cases):
        raise SystemExit("kw_eval_cli %s: %d lines for %d cases" % (mode, len(lines),
                                                                    len(cases)))
    return lines


def main():
    cases = gen_cases()
    got = run_cli("metric", cases)
    bad, per, fails = 0, Counter(), Counter()
    for c, line in zip(cases, got):
        want = ref_metric(c["metric"], c["pred"], c["answer"], c["all_classes"])
        per[c["metric"]] += 1
        have = None if line.startswith("ERROR") else float(line)
        if have != float(want):
            bad += 1
            if bad <= 25:
                print("mismatch %s: pred=%r answer=%r\n  python %r  c %r" % (
                    c["metric"], c["pred"][:120], c["answer"][:120], want, line))
        if c["metric"] in ROUGE_METRICS and want == 0.0:
            fails[c["metric"]] += 1
    tasks = gen_tasks()
    tgot = run_cli("task", tasks)
    tbad = 0
    for t, line in zip(tasks, tgot):
        want = as_eval_py(2, scorer, t["task"], t["preds"], t["answers"], t["all_classes"])
        if line.startswith("ERROR") or float(line) != want:
            tbad += 1
            print("task mismatch %s: python %r c %r" % (t["task"], want, line))
    print("metrics: %s; %d mismatches; rouge zero scores %s" % (
        ", ".join("%s %d" % kv for kv in sorted(per.items())), bad, dict(fails)))
    print("task scores: %d sets, %d mismatches" % (len(tasks), tbad))
    return 1 if bad or tbad else 0


if __name__ == "__main__":
    sys.exit(main())
