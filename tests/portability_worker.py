"""Load a teachwhy adapter as PEFT, transformers and Inspect users do, in a process where teachwhy
cannot be imported (as on a machine without it), offline; print the next-token log-probs of a
prompt as JSON: the full distribution from AutoPeftModelForCausalLM and AutoModelForCausalLM, the
top 20 from Inspect's hf/ provider.

    python portability_worker.py ADAPTER_DIR MESSAGES_JSON OUT_JSON
"""

import asyncio
import json
import sys
from pathlib import Path

sys.modules["teachwhy"] = None  # any `import teachwhy` now fails: nothing below may need it

import torch  # noqa: E402
from inspect_ai.model import ChatMessageSystem, ChatMessageUser, GenerateConfig, get_model  # noqa: E402
from peft import AutoPeftModelForCausalLM  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

adapter, messages_file, out_file = sys.argv[1:4]
messages = json.loads(Path(messages_file).read_text())
tok = AutoTokenizer.from_pretrained(adapter)
text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
out = {"text": text}
for name, loader in (("peft", AutoPeftModelForCausalLM), ("transformers", AutoModelForCausalLM)):
    model = loader.from_pretrained(adapter, dtype=torch.float32).eval()
    out[f"{name}_is_peft"] = hasattr(model, "peft_config")
    with torch.no_grad():
        out[name] = torch.log_softmax(model(ids).logits[0, -1].float(), -1).tolist()
    del model
inspect_model = get_model(f"hf/{adapter}", device="cpu", dtype=torch.float32)
reply = asyncio.run(inspect_model.generate(
    [ChatMessageSystem(content=messages[0]["content"]), ChatMessageUser(content=messages[1]["content"])],
    config=GenerateConfig(max_tokens=1, logprobs=True, top_logprobs=20)))
out["inspect_top"] = [[t.token, t.logprob] for t in reply.choices[0].logprobs.content[0].top_logprobs]
Path(out_file).write_text(json.dumps(out))
