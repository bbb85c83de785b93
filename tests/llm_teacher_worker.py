"""Run an LLMTeacher over N documents jobs against a scripted server (the killed-then-rerun test)."""

import sys

from teachwhy.data.records import Job
from teachwhy.teachers.llm import LLMTeacher


def jobs(n: int) -> list[Job]:
    return [Job("documents", f"doc-{i}", ("p1",), {"doc_type": "essay", "idea": f"idea number {i}",
                                                   "principle": {"id": "p1", "statement": "be honest"}}, i)
            for i in range(n)]


if __name__ == "__main__":
    model, cache, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    teacher = LLMTeacher(model, cache, concurrency=2, max_retries=1, backoff=(0.01, 0.05), timeout=5)
    done = sum(r.content is not None for r in teacher.realise(jobs(n)))
    print(f"done {done} calls {teacher.stats.calls}", flush=True)
