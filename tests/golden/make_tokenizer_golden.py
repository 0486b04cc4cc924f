#!/usr/bin/env python3
"""Makes the tokenizer goldens (not run in CI).

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install tokenizers transformers gguf jinja2
    /tmp/venv/bin/python tests/golden/make_tokenizer_golden.py \
        --gguf "$KVWEAVE_HOME/models/smollm2-135m-instruct.gguf" \
        --book "$KVWEAVE_DATA/text/pg19_frank_merriwell_down_south.txt"

Writes, next to this script:
  tokenizer_smollm2.json  ids of a varied text set, a count + sha256 of the ids of the
                          book's first 200,000 bytes, and ChatML renders, all by the
                          Hugging Face `tokenizers` library.
  tok_tiny_*/             small tokenizer.json files (trained here on a fixed corpus)
                          with ids, for the tokenizer.json loader.

The reference tokenizer is built with the `tokenizers` library from the vocabulary and
merges stored in the GGUF (tokenizer.ggml.tokens/merges), with the pre-tokenizer of
SmolLM2's tokenizer.json: Sequence[Digits(individual_digits=True), ByteLevel(
add_prefix_space=False)], the ByteLevel decoder, and the control tokens as special added
tokens. Chat renders come from transformers' apply_chat_template with the GGUF's
tokenizer.chat_template.
"""
import argparse
import hashlib
import json
import os
import struct

import gguf
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import AddedToken, Regex

HERE = os.path.dirname(os.path.abspath(__file__))
BOOK_BYTES = 200000

TEXTS = [
    "Hello world",
    "Hello, world! How are you doing today?",
    "The quick brown fox jumps over the lazy dog.",
    " leading space",
    "trailing space ",
    "I'm sure they've said we'll see what you'd do, isn't it? DON'T SHOUT.",
    "我们今天去公园散步，天气很好。",
    "中文和English混合的句子，123个数字。",
    "日本語のテキストです。カタカナとひらがな、漢字。",
    "한국어 문장도 있습니다.",
    "Привет, мир! Как дела?",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n",
    "for (int i = 0; i < n; i++) {\n\tsum += x[i] * 2.5f;\n}\n",
    "if x == 3:\r\n\ty = {'k': [1, 2, 3]}\r\n",
    "emoji: 😀 🎉 👍🏽 🇫🇷",
    "family: 👨‍👩‍👧‍👦 and 👩🏽‍💻 zwj",
    "numbers: 1 12 123 1234 12345 3.14159 -42 1e10 0x1F 1,000,000",
    "phone 555-123-4567 and year 2024",
    "     five spaces then text",
    "text then\n\n\n\nnewlines",
    "tabs\t\tand\t spaces   \t mixed",
    "   ",
    "\n",
    "a\r\nb\r\n\r\nc",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "text<|im_end|>more<|endoftext|>",
    "<|im_start|><|im_start|>",
    "half <|im_star special",
    "café naïve résumé Zoë façade",
    "e\u0301 combining accent vs \u00e9",
    "\ufeffBOM and \u200bzero width\u200d joiner",
    "\ufffd replacement char and \U0001F600\U0001F600",
    "math: ∑ x² ≤ ∞ → ∀ε>0 ∃δ",
    "quotes “curly” ‘single’ — em dash … ellipsis",
    "URL https://example.com/path?q=1&r=two#frag",
    "email someone@example.org",
    "ALLCAPS lowercase MiXeD CamelCaseWord snake_case_word",
    "'s 't 're 've 'm 'll 'd",
    "     ",
    "x" * 300,
    "ab " * 50,
    "Ünïcödé   \u3000ideographic space\u00a0nbsp",
    "",
]

# Random strings over characters where regex engines tend to disagree: Unicode spaces,
# numbers outside 0-9 (superscripts, fractions, Roman numerals, full-width digits),
# combining marks, scripts without spaces, emoji with modifiers and joiners.
POOL = (list("abcXYZ019 '.,!?-_\t\n\r") + ["  ", "   ", "\r\n", "'s", "'ll", "'T"] +
        ["\u00a0", "\u2003", "\u200b", "\u3000", "\u0085", "\ufeff", "\u2028", "\u180e",
         "\u00b2", "\u00bd", "\u2167", "\uff11", "\u0663", "\u0301", "\u0308",
         "\u4e2d", "\u6587", "\u3042", "\u30ab", "\uac00", "\u0627\u0644", "\u0915\u093f",
         "\u00e9", "\u00df", "\u0130", "\U0001F600", "\U0001F44D\U0001F3FD", "\u200d",
         "\U0001F1EB\U0001F1F7", "\u2764\ufe0f", "\u20ac", "\u00a9", "\u2026", "<|im_end|>",
         "<|endoftext|>", "<s>", "\U00010348", "\ufffd"])


def random_texts(n, seed=1234):
    import random
    rng = random.Random(seed)
    return ["".join(rng.choice(POOL) for _ in range(rng.randint(1, 24))) for _ in range(n)]


CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, hello there; hello again",
    "numbers 123 4567 and 89",
    "the cat sat on the mat with the hat",
    "café crème brûlée",
    "tokenizers split words into pieces and merge them",
    "中文 字符 中文 字符",
]

TINY_TEXTS = [
    "hello world",
    "the cat sat on the mat",
    "unseen words zebra quokka",
    "numbers 1234 and 56",
    "café crème",
    "emoji 😀 and 中文",
    "  spaces   around  ",
    "new\nline\r\ntab\t.",
    "<s>special</s> inside",
    "",
]


def gguf_tokenizer(path):
    r = gguf.GGUFReader(path)

    def arr(key):
        f = r.fields[key]
        return [bytes(f.parts[d]).decode("utf-8") for d in f.data]

    def num(key):
        f = r.fields[key]
        return int(f.parts[f.data[0]][0])

    tokens = arr("tokenizer.ggml.tokens")
    merges = arr("tokenizer.ggml.merges")
    f = r.fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[d][0]) for d in f.data]
    f = r.fields["tokenizer.chat_template"]
    template = bytes(f.parts[f.data[0]]).decode("utf-8")
    assert r.fields["tokenizer.ggml.model"].parts[-1].tobytes() == b"gpt2"
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == 3])
    return tok, template, num("tokenizer.ggml.bos_token_id"), num("tokenizer.ggml.eos_token_id")


def ids_hash(ids):
    return hashlib.sha256(b"".join(struct.pack("<i", i) for i in ids)).hexdigest()


def book_prefix(path):
    with open(path, "rb") as f:
        b = f.read(BOOK_BYTES)
    return b.decode("utf-8", errors="ignore")  # drops a character cut at the end


def chat_goldens(tok, template):
    from transformers import PreTrainedTokenizerFast
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=template)
    cases = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "system", "content": "You are terse."},
         {"role": "user", "content": "Summarize:\n\nThe text.\n"}],
        [{"role": "user", "content": "多语言 😀 test"}],
    ]
    out = []
    for msgs in cases:
        text = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        out.append({"template": template, "messages": msgs, "text": text,
                    "ids": tok.encode(text).ids})
    return out


LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}")
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}"
    "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}")
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token + ' ' }}{% endif %}{% endfor %}")


def other_chat_goldens(tok):
    """Renders of the public Llama-3, Llama-2-chat and Mistral-v0.1 templates."""
    from transformers import PreTrainedTokenizerFast
    out = []
    convs = [
        [{"role": "user", "content": "  Hello there!\n"}],
        [{"role": "system", "content": "Be brief."},
         {"role": "user", "content": "What is 2+2?"}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
         {"role": "user", "content": "Bye"}],
    ]
    for style, tmpl, bos, eos in (("llama3", LLAMA3_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>"),
                                  ("llama2", LLAMA2_TEMPLATE, "<s>", "</s>"),
                                  ("mistral", MISTRAL_TEMPLATE, "<s>", "</s>")):
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=tmpl,
                                     bos_token=bos, eos_token=eos)
        for msgs in convs:
            if style == "mistral" and msgs[0]["role"] == "system":
                continue
            text = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            out.append({"style": style, "template": tmpl, "messages": msgs, "text": text})
    return out


def tiny_tokenizers():
    """Three small tokenizer.json files covering the loader's variants."""
    out = {}
    # byte-level BPE, GPT-2 regex, merges saved as [a, b] pairs
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=330, special_tokens=["<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    out["tok_tiny_bytelevel"] = t
    # Llama-3-style: Split(regex) + ByteLevel(use_regex=False), NFC, ignore_merges
    t2 = Tokenizer(models.BPE(ignore_merges=True))
    t2.normalizer = normalizers.NFC()
    llama3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
              r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    t2.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(llama3), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t2.decoder = decoders.ByteLevel()
    t2.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=330, special_tokens=["<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    out["tok_tiny_llama3"] = t2
    # Qwen2-style: the Qwen2 Split regex (single digits), NFC, ChatML specials
    t4 = Tokenizer(models.BPE())
    t4.normalizer = normalizers.NFC()
    qwen2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
             r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    t4.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(qwen2), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t4.decoder = decoders.ByteLevel()
    t4.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=340, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    out["tok_tiny_qwen2"] = t4
    # SentencePiece-style: ▁ for spaces, byte fallback, Llama-2 decoder
    base = Tokenizer(models.BPE(unk_token="<unk>"))
    base.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                            normalizers.Replace(" ", "\u2581")])
    base.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False))
    j = json.loads(base.to_str())
    old = j["model"]["vocab"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = 3 + b
    for k, v in sorted(old.items(), key=lambda kv: kv[1]):
        if k not in vocab:
            vocab[k] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
              for m in j["model"]["merges"]]
    t3 = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>",
                              byte_fallback=True))
    t3.normalizer = base.normalizer
    t3.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                    decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    t3.add_special_tokens([AddedToken(s, special=True, normalized=False)
                           for s in ("<unk>", "<s>", "</s>")])
    out["tok_tiny_spm"] = t3
    return out


def dump(obj, path):
    """JSON with one list item per line: small files, readable diffs."""
    parts = []
    for k, v in obj.items():
        if isinstance(v, list):
            items = ",\n  ".join(json.dumps(x, ensure_ascii=False) for x in v)
            parts.append("%s: [\n  %s\n ]" % (json.dumps(k), items))
        else:
            parts.append("%s: %s" % (json.dumps(k), json.dumps(v, ensure_ascii=False)))
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n " + ",\n ".join(parts) + "\n}\n")


def write_tiny():
    for name, t in tiny_tokenizers().items():
        d = os.path.join(HERE, name)
        os.makedirs(d, exist_ok=True)
        j = json.loads(t.to_str())
        if name == "tok_tiny_llama3":  # the older merge encoding: "a b" strings
            j["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m
                                    for m in j["model"]["merges"]]
        with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(j, f, ensure_ascii=False, separators=(",", ":"))
        t = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        cases = [{"text": s, "ids": t.encode(s).ids}
                 for s in TINY_TEXTS + TEXTS + random_texts(60, seed=99)]
        dump({"cases": cases}, os.path.join(d, "golden.json"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--book", required=True)
    a = ap.parse_args()
    tok, template, bos, eos = gguf_tokenizer(a.gguf)
    cases = []
    for s in TEXTS + random_texts(120):
        ids = tok.encode(s).ids
        assert tok.decode(ids, skip_special_tokens=False) == s, s
        cases.append({"text": s, "ids": ids})
    book = tok.encode(book_prefix(a.book)).ids
    runs = []
    for fill in [" ", "a", "1", "!", "\n", "\u4e2d", " a", "\t ", " \r\n", "ab ", "\U0001F600"]:
        rep = 100000 // len(fill)
        ids = tok.encode(fill * rep + "x").ids
        runs.append({"fill": fill, "repeat": rep, "then": "x", "count": len(ids),
                     "sha256_le_i32": ids_hash(ids)})
    golden = {
        "tokenizer": "SmolLM2-135M-Instruct GGUF vocab + merges, HF tokenizers",
        "cases": cases,
        "book": {"file": "text/" + os.path.basename(a.book), "bytes": BOOK_BYTES,
                 "count": len(book), "sha256_le_i32": ids_hash(book)},
        "runs": runs,
        "chat": chat_goldens(tok, template),
        "chat_other": other_chat_goldens(tok),
    }
    dump(golden, os.path.join(HERE, "tokenizer_smollm2.json"))
    write_tiny()


if __name__ == "__main__":
    main()
