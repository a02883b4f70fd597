"""RuvonVLLM: a readable LLM inference engine.

    from ruvonvllm import LLM, SamplingParams
    llm = LLM()  # the embedded SmolLM2-135M-Instruct
    print(llm.generate("The capital of France is", SamplingParams(temperature=0))[0].outputs[0].text)
"""

from ruvonvllm.outputs import CompletionOutput, RequestOutput
from ruvonvllm.sampling.params import RequestOutputKind, SamplingParams

__all__ = ["LLM", "SamplingParams", "RequestOutput", "CompletionOutput", "RequestOutputKind"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # LLM pulls in torch and the model code; import it only when asked for.
    if name == "LLM":
        from ruvonvllm.engine.llm import LLM
        return LLM
    raise AttributeError(f"module 'ruvonvllm' has no attribute {name!r}")
