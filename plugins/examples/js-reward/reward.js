// The component's entry point: the `reward` interface of the `reward-plugin`
// world (lmmhost:plugin@0.1.0), bound to the rule in numeric-r1.js.
// componentize-js maps WIT names to camelCase (score-batch -> scoreBatch,
// response-tokens -> responseTokens), option<string> to string | undefined,
// result<T, E> in a list to { tag: 'ok' | 'err', val }, and a thrown error from
// a function returning result<_, string> to its `err` case.

import { NumericR1 } from './numeric-r1.js';

let rule;

export const reward = {
  init(config) {
    try {
      rule = new NumericR1(config);
    } catch (e) {
      throw { payload: String(e.message ?? e) };
    }
  },

  scoreBatch(batch) {
    return batch.map((c) => {
      if (rule === undefined) return { tag: 'err', val: 'reward plugin used before `init`' };
      try {
        return { tag: 'ok', val: rule.score(c.sample.id, c.sample.answer, c.response) };
      } catch (e) {
        return { tag: 'err', val: String(e.message ?? e) };
      }
    });
  },
};
