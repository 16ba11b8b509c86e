"""Real-world validation: replay published vLLM benchmarks (:mod:`.points`) as their clients ran them
(:mod:`.setup`), and score every prediction (:mod:`.run`); ``llmsim validate`` is :mod:`.cli`."""
