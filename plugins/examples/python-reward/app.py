"""The component's entry point: binds the `reward` interface of the
`reward-plugin` world (lmmhost:plugin@0.1.0) to the rule in numeric_r1.py.

componentize-py generates the `wit_world` package from wit/v0.1.0 at build time.
"""

from typing import List

from componentize_py_types import Err, Ok, Result
from wit_world import exports
from wit_world.imports import types

from numeric_r1 import ConfigError, NumericR1


class Reward(exports.Reward):
    # One component instance holds one rule; the host calls init first.
    rule = None

    def init(self, config: str) -> None:
        try:
            Reward.rule = NumericR1(config)
        except ConfigError as e:
            raise Err(str(e))

    def score_batch(self, batch: List[types.Completion]) -> List[Result[types.Score, str]]:
        rule = Reward.rule
        if rule is None:
            return [Err("reward plugin used before `init`") for _ in batch]
        out = []
        for c in batch:
            try:
                total, components = rule.score(c.sample.id, c.sample.answer, c.response)
                out.append(Ok(types.Score(total=total, components=components)))
            except ValueError as e:
                out.append(Err(str(e)))
        return out
