import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache, GenerationMixin

import agents  # noqa: F401  (registers motion_gpt with the Auto classes)
from agents.motion_gpt import MotionGPTConfig, MotionGPTForCausalLM, MotionKVCache, PackedRows

K, TEXT_DIM, MAX_CODES = 16, 8, 10
END, PAD = K, K + 1


def tiny_config(**overrides) -> MotionGPTConfig:
    kwargs = dict(codebook_size=K, text_dim=TEXT_DIM, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_codes=MAX_CODES, dropout=0.0)  # fmt: skip
    return MotionGPTConfig(**(kwargs | overrides))


@pytest.fixture
def model() -> MotionGPTForCausalLM:
    torch.manual_seed(0)
    return MotionGPTForCausalLM(tiny_config()).eval()


@pytest.fixture
def text() -> torch.Tensor:
    return torch.randn(5, TEXT_DIM, generator=torch.Generator().manual_seed(1))


def random_codes(batch: int, length: int, seed: int = 2) -> torch.Tensor:
    return torch.randint(0, K, (batch, length), generator=torch.Generator().manual_seed(seed))


def force_end_at(model: MotionGPTForCausalLM, steps: list[int]):
    """Hook the head so that row i emits END at generation step steps[i] (-1: never)."""
    calls = {"step": 0, "rows": list(range(len(steps)))}  # the batch's rows, as generate computes them

    def hook(module, args, logits):
        if logits.dim() == 2:  # generate's per-step call: (b, V)
            if logits.shape[0] < len(calls["rows"]):  # the ended rows left the batch
                calls["rows"] = [r for r in calls["rows"] if not 0 <= steps[r] < calls["step"]]
            rows = torch.tensor([steps[r] == calls["step"] for r in calls["rows"]])
            logits[rows, END] = 1e4
            calls["step"] += 1
        return logits

    return model.lm_head.register_forward_hook(hook)


@torch.no_grad()
def make_end_competitive(model: MotionGPTForCausalLM) -> None:
    """Spread the logits of the freshly initialised head and raise END's, so rows end at different steps."""
    model.lm_head.weight.mul_(20.0)
    model.lm_head.bias[END] = 3.0


def reference_greedy(model: MotionGPTForCausalLM, text: torch.Tensor, max_codes: int) -> list[list[int]]:
    """Greedy decoding one row at a time, recomputing the whole prefix every step (no cache)."""
    rows = []
    for feature in text:
        codes = []
        while len(codes) < max_codes:
            logits = model(torch.tensor([codes], dtype=torch.long), feature[None]).logits[0, -1]
            token = int(logits.argmax())
            if token == END:
                break
            codes.append(token)
        rows.append(codes)
    return rows


# --- config ------------------------------------------------------------------------------


def test_config_derives_special_ids_and_validates():
    config = tiny_config()
    assert (config.vocab_size, config.end_token_id, config.pad_token_id) == (K + 2, K, K + 1)
    with pytest.raises(ValueError, match=r"hidden_size \(30\).*num_attention_heads \(4\)"):
        tiny_config(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="vocab_size.*must be 18, got 20"):
        tiny_config(vocab_size=20)
    assert MotionGPTConfig.from_dict(config.to_dict()).vocab_size == K + 2  # a saved config reloads


# --- forward -----------------------------------------------------------------------------


def test_forward_shapes_loss_and_pad_never_predicted(model, text):
    codes = random_codes(5, 7)
    labels = torch.cat([codes, torch.full((5, 1), END)], dim=1)  # (B, L + 1): code i at i, END last
    out = model(codes, text, labels=labels)
    assert out.logits.shape == (5, 8, K + 2)
    assert torch.isneginf(out.logits[..., PAD]).all()
    expected = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), labels.flatten())
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_attention_mask_ignores_labels_past_padding(model, text):
    codes = random_codes(5, 6)
    lengths = torch.tensor([6, 4, 1, 3, 6])
    mask = (torch.arange(6) < lengths[:, None]).long()
    padded = codes.masked_fill(mask == 0, PAD)
    labels = torch.cat([codes.masked_fill(mask == 0, -100), torch.full((5, 1), -100)], dim=1)
    labels[torch.arange(5), lengths] = END
    garbage = labels.clone()
    garbage[:, 1:][mask == 0] = 3  # labels past END that the mask must drop
    clean_loss = model(padded, text, labels=labels).loss
    torch.testing.assert_close(model(padded, text, attention_mask=mask, labels=garbage).loss, clean_loss)
    with pytest.raises(ValueError, match="right-padded"):
        model(padded, text, attention_mask=mask.flip(1))


@pytest.mark.parametrize("cache_kind", ["motion", "dynamic", "past_key_values"])
def test_cached_incremental_forward_matches_full_forward(model, text, cache_kind):
    codes = random_codes(5, MAX_CODES)
    full = model(codes, text).logits  # (B, L + 1, V)
    cache = {"motion": MotionKVCache(model.config, 5), "dynamic": DynamicCache()}.get(cache_kind)
    name = "past_key_values" if cache_kind == "past_key_values" else "cache"
    out = model(codes[:, :3], text, use_cache=True, **{name: cache})  # text + 3 codes
    pieces = [out.logits]
    for start, stop in [(3, 4), (4, 5), (5, 8), (8, 10)]:  # single steps and multi-code chunks
        out = model(codes[:, start:stop], **{name: out.cache})
        pieces.append(out.logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


# --- generate ----------------------------------------------------------------------------


def reference_sample(model, text: torch.Tensor, seed: int) -> list[list[int]]:
    """Sampling without a cache or dropped rows: every row recomputed from its whole prefix each step,
    one uniform per row of the whole batch per step (inverse CDF), until every row has ended."""
    generator = torch.Generator().manual_seed(seed)
    rows, ended = [[] for _ in text], [False] * len(text)
    for _ in range(MAX_CODES):
        u = torch.rand(len(text), 1, generator=generator)
        for i, feature in enumerate(text):
            if ended[i]:
                continue
            probs = model(torch.tensor([rows[i]], dtype=torch.long), feature[None]).logits[0, -1].softmax(-1)
            cdf = probs.cumsum(-1)
            token = int(torch.searchsorted(cdf, u[i] * cdf[-1], right=True))
            ended[i] = token == END
            if not ended[i]:
                rows[i].append(token)
        if all(ended):
            break
    return rows


@torch.no_grad()
def test_rows_that_end_leave_the_batch_without_changing_the_other_rows_samples(model):
    make_end_competitive(model)
    text = torch.randn(16, TEXT_DIM, generator=torch.Generator().manual_seed(3))
    for seed in range(3):
        codes, lengths = model.generate(text, generator=torch.Generator().manual_seed(seed))
        assert len(set(lengths.tolist())) > 2  # rows end at different steps, so some leave the batch early
        expected = reference_sample(model, text, seed)
        assert [row[:n].tolist() for row, n in zip(codes, lengths)] == expected


def test_generate_stops_each_row_at_its_own_end(model, text):
    steps = [0, 3, -1, 7, 1]  # -1: never emits END, cut at max_codes
    handle = force_end_at(model, steps)
    codes, lengths, logprobs = model.generate(text, generator=torch.Generator().manual_seed(0), return_logprobs=True)
    handle.remove()
    expected = torch.tensor([MAX_CODES if s < 0 else s for s in steps])
    assert torch.equal(lengths, expected)
    assert codes.shape == logprobs.shape == (5, MAX_CODES)
    inside = torch.arange(MAX_CODES) < lengths[:, None]
    assert (codes[inside] < K).all()  # real codes, no END inside
    assert (codes[~inside] == PAD).all()
    ended = lengths < MAX_CODES
    end_logprobs = logprobs[ended, lengths[ended]]
    torch.testing.assert_close(end_logprobs, torch.zeros_like(end_logprobs))  # END forced: log p = 0
    after = torch.arange(MAX_CODES) > lengths[:, None]
    assert (logprobs[after] == 0).all()
    assert (logprobs[inside] < 0).all()


def test_generate_greedy_matches_uncached_reference_and_is_deterministic(model, text):
    make_end_competitive(model)
    codes, lengths = model.generate(text, do_sample=False)
    reference = reference_greedy(model, text, MAX_CODES)
    assert lengths.tolist() == [len(r) for r in reference]
    assert len(set(lengths.tolist())) > 1, "the case should have rows of different lengths"
    for row, ref in zip(codes, reference):
        assert row[: len(ref)].tolist() == ref and (row[len(ref) :] == PAD).all()
    again, _ = model.generate(text, do_sample=False)
    assert torch.equal(codes, again)


def test_sampling_is_reproducible_with_a_generator(model, text):
    def sample(seed):
        return model.generate(text, temperature=1.5, generator=torch.Generator().manual_seed(seed))

    first, second, other = sample(0), sample(0), sample(1)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], other[0])


def test_top_k_1_and_tiny_top_p_equal_greedy(model, text):
    greedy, greedy_lengths = model.generate(text, do_sample=False)
    for options in ({"top_k": 1}, {"top_p": 1e-6}):
        codes, lengths = model.generate(text, generator=torch.Generator().manual_seed(3), **options)
        assert torch.equal(codes, greedy) and torch.equal(lengths, greedy_lengths), options


def test_logprobs_match_a_teacher_forced_forward(model, text):
    make_end_competitive(model)
    temperature = 1.5
    codes, lengths, logprobs = model.generate(
        text, temperature=temperature, top_k=8, generator=torch.Generator().manual_seed(4), return_logprobs=True
    )
    assert (lengths < MAX_CODES).any() and len(set(lengths.tolist())) > 1
    labels = torch.cat([codes, torch.full((5, 1), PAD)], dim=1)
    labels[torch.arange(5), lengths] = END  # the action after the last code
    labels = labels[:, :MAX_CODES]
    with torch.no_grad():
        logits = model(codes, text).logits[:, :MAX_CODES]  # (B, max_codes, V)
    expected = (logits / temperature).log_softmax(-1).gather(2, labels.clamp(max=END)[..., None]).squeeze(-1)
    acted = torch.arange(MAX_CODES) <= lengths[:, None]
    torch.testing.assert_close(logprobs[acted], expected[acted], rtol=1e-4, atol=1e-5)


def test_hidden_states_match_a_teacher_forced_forward(model, text):
    make_end_competitive(model)
    codes, lengths, logprobs, hidden = model.generate(text, generator=torch.Generator().manual_seed(5),
                                                      return_logprobs=True, return_hidden_states=True)  # fmt: skip
    assert hidden.shape == (5, MAX_CODES, 32) and len(set(lengths.tolist())) > 1
    with torch.no_grad():
        expected = model.transformer(codes[:, : MAX_CODES - 1], text).last_hidden_state  # states [text, codes[:t]]
    acted = torch.arange(MAX_CODES) <= lengths[:, None]
    torch.testing.assert_close(hidden[acted], expected[acted], rtol=1e-5, atol=1e-5)
    assert (hidden[~acted] == 0).all()
    assert model.generate(text, return_hidden_states=True)[2].shape == (5, MAX_CODES, 32)  # without logprobs


def test_min_codes_and_max_codes(model, text):
    with torch.no_grad():
        model.lm_head.bias[END] += 100.0  # END would win every step
    codes, lengths = model.generate(text, min_codes=4, max_codes=6, do_sample=False)
    assert codes.shape == (5, 6) and (lengths == 4).all()
    with pytest.raises(ValueError, match=f"max_codes must be in \\[1, {MAX_CODES}\\], got 11"):
        model.generate(text, max_codes=MAX_CODES + 1)
    with pytest.raises(ValueError, match="temperature must be > 0.*got 0"):
        model.generate(text, temperature=0.0)


def test_transformers_generate_runs_on_the_model(model, text):
    ours, lengths = model.generate(text, do_sample=False)
    placeholder = torch.full((5, 1), END)  # stands for the text position
    theirs = GenerationMixin.generate(model, placeholder, text_features=text, max_new_tokens=MAX_CODES, do_sample=False,
                                      eos_token_id=END, pad_token_id=PAD)  # fmt: skip
    for row, n, their_row in zip(ours, lengths, theirs[:, 1:]):
        assert their_row[:n].tolist() == row[:n].tolist()


# --- checkpoints -------------------------------------------------------------------------


def test_save_and_load_give_identical_logits(model, text, tmp_path):
    codes = random_codes(5, 4)
    model.save_pretrained(tmp_path)
    loaded = MotionGPTForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded(codes, text).logits, model(codes, text).logits, rtol=0, atol=0)
    auto = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(auto, MotionGPTForCausalLM)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), MotionGPTConfig)
    torch.testing.assert_close(auto(codes, text).logits, model(codes, text).logits, rtol=0, atol=0)


def test_missing_or_truncated_weights_raise_a_clear_error(model, tmp_path):
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match=f"{tmp_path}.*truncated or corrupt"):
        MotionGPTForCausalLM.from_pretrained(tmp_path)
    with pytest.raises(OSError, match="truncated or corrupt"):
        AutoModelForCausalLM.from_pretrained(tmp_path)
    weights.unlink()
    with pytest.raises(OSError, match="no file named model.safetensors"):  # transformers' own message is clear
        MotionGPTForCausalLM.from_pretrained(tmp_path)


# --- LoRA --------------------------------------------------------------------------------


def test_lora_attaches_and_disable_adapter_restores_base_logits(model, text):
    from peft import LoraConfig, get_peft_model

    codes = random_codes(5, 4)
    base = model(codes, text).logits
    base_codes, _ = model.generate(text, do_sample=False)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    lora_params = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    assert lora_params and all("lora_" in n for n in lora_params)
    assert any(".q_proj." in n for n in lora_params) and any(".v_proj." in n for n in lora_params)
    with torch.no_grad():
        for name, param in lora_params.items():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    adapted = peft_model(input_ids=codes, text_features=text).logits
    assert not torch.allclose(adapted[..., :END], base[..., :END])
    with peft_model.disable_adapter():
        torch.testing.assert_close(peft_model(input_ids=codes, text_features=text).logits, base, rtol=0, atol=0)
        assert torch.equal(peft_model.generate(text, do_sample=False)[0], base_codes)
    assert not torch.equal(peft_model.generate(text, do_sample=False)[0], base_codes)


def test_gradient_checkpointing_gives_the_same_gradients(text):
    codes = random_codes(5, 6)
    labels = torch.cat([codes, torch.full((5, 1), END)], dim=1)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = MotionGPTForCausalLM(tiny_config()).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert all(block.gradient_checkpointing for block in model.transformer.h)
        model(codes, text, labels=labels).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


# --- bad input ---------------------------------------------------------------------------


def test_bad_input_raises_value_errors_naming_the_values(model, text):
    codes = random_codes(5, 3)
    with pytest.raises(ValueError, match=r"text_dim=8.*\(5, 7\)"):
        model(codes, torch.randn(5, 7))
    bad = codes.clone()
    bad[0, 1] = K + 2
    bad[1, 0] = 99
    with pytest.raises(ValueError, match=r"\[0, 18\), got \[18, 99\]"):
        model(bad, text)
    with pytest.raises(ValueError, match="text_features.*required on the first call"):
        model(codes)
    with pytest.raises(ValueError, match=r"exceeds max_codes \+ 1 = 11"):
        model(random_codes(5, MAX_CODES + 1), text)
    with pytest.raises(ValueError, match=r"labels must have shape \(5, 4\).*\(5, 3\)"):
        model(codes, text, labels=codes)
    with pytest.raises(ValueError, match=r"got \[17\]"):
        model(codes, text, labels=torch.full((5, 4), PAD))
    out = model(codes, text, use_cache=True)
    with pytest.raises(ValueError, match="only taken on the first call.*holds 4 positions"):
        model(codes[:, :1], text, cache=out.cache)


# --- packing -----------------------------------------------------------------------------


def test_packed_rows_match_the_padded_batch_in_outputs_and_gradients():
    torch.manual_seed(3)
    model = MotionGPTForCausalLM(tiny_config())
    width = MAX_CODES + 1
    lengths = torch.tensor([11, 4, 1, 7, 3, 9, 2, 5])  # valid positions (text + codes) per row
    text, codes = torch.randn(8, TEXT_DIM), random_codes(8, MAX_CODES)
    packing = PackedRows.if_worth_it(lengths, width)
    assert packing is not None and packing.num_rows < 8  # 42 positions fit in fewer rows of 11
    assert sorted(packing.index[packing.index >= 0].tolist()) == [
        b * width + t for b in range(8) for t in range(int(lengths[b]))
    ]
    valid = torch.arange(width) < lengths[:, None]
    code_mask = valid[:, 1:].long()  # the real codes: a row's positions past its text

    def run(attention_mask):
        hidden = model.transformer(codes, text, attention_mask=attention_mask).last_hidden_state
        loss = (model._logits(hidden)[..., : END + 1].log_softmax(-1)[valid] * torch.linspace(-1, 1, END + 1)).sum()
        return hidden, torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)

    padded, padded_grads = run(None)
    packed, packed_grads = run(code_mask)  # the mask makes the model pack
    torch.testing.assert_close(packed[valid], padded[valid], rtol=1e-5, atol=1e-5)
    assert (packed[~valid] == 0).all()
    for (name, _), a, b in zip(model.named_parameters(), padded_grads, packed_grads):
        if a is None or "k_proj.bias" in name:  # a key bias has no effect on attention: its gradient is noise
            continue
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=name)
    # the causal LM's loss over labels masked by the same attention_mask does not change either
    labels = torch.cat([codes, torch.full((8, 1), END)], dim=1)
    loss = model(codes, text, labels=labels, attention_mask=code_mask).loss
    with torch.no_grad():
        unpacked = model._logits(model.transformer(codes, text).last_hidden_state)
    expected = torch.nn.functional.cross_entropy(unpacked[valid], labels[valid])
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_packing_is_skipped_when_it_saves_little_and_refuses_bad_input():
    assert PackedRows.if_worth_it(torch.full((4,), 9), 10) is None  # no two rows fit together
    assert PackedRows.if_worth_it(torch.tensor([5, 5, 5, 5]), 10).num_rows == 2
    for bad in (PackedRows, PackedRows.if_worth_it):
        with pytest.raises(ValueError, match=r"lengths must be a \(B,\) tensor of values in \[1, 10\], got \[0, 3\]"):
            bad(torch.tensor([0, 3]), 10)
