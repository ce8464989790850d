//! Beam search: the `beam_size` most probable prefixes of every sentence, extended step by step
//! on the key/value cache, the live beams of all sentences in one batch; finished hypotheses are
//! ranked by log-probability over GNMT's length penalty `((5 + len) / 6)^α` (Wu et al., 2016).

use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::cache::DecodeContext;
use crate::greedy::DecodeError;
use crate::next_token::{Candidate, best_next_tokens};
use crate::output_limit::OutputLimit;
use crate::transformer::Transformer;

/// How to search.
#[derive(Clone, Debug, PartialEq)]
pub struct BeamOptions {
    /// The token every target starts with.
    pub bos: usize,
    /// The token that ends a target (not included in the output).
    pub eos: usize,
    /// Hypotheses kept per sentence. 1 is greedy decoding.
    pub beam_size: usize,
    /// Length-penalty exponent α; 0 ranks by log-probability alone.
    pub alpha: f64,
    /// Most tokens per sentence (EOS included), from its source length.
    pub max_output: OutputLimit,
    /// How finished hypotheses are ranked and when a sentence is done. Default: GNMT's.
    pub ranking: BeamRanking,
    /// A token never generated (`transformers`' `bad_words_ids` of one token: opus-mt's pad);
    /// removed after the log-softmax, as `generate` removes it. Default: none.
    pub forbidden: Option<usize>,
}

/// How beam search ranks finished hypotheses, and when a sentence's search is over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BeamRanking {
    /// GNMT's length penalty `((5 + len) / 6)^α` (Wu et al., 2016), as OpenNMT and the paper's
    /// tensor2tensor rank; a sentence is done once `beam_size` hypotheses have ended.
    #[default]
    Gnmt,
    /// As `transformers`' `generate` (`length_penalty` = α, `early_stopping=False`): a
    /// hypothesis scores `log_prob / len^α`; a sentence is done once `beam_size` hypotheses
    /// have ended and the best live beam, at its length, cannot beat the worst of them; with
    /// `forced_eos` (`forced_eos_token_id`), every beam still live at the length limit ends
    /// there with EOS.
    Transformers {
        /// End the beams live at the length limit with EOS (counted in their length).
        forced_eos: bool,
    },
}

/// Hypotheses kept per sentence unless told otherwise.
pub const DEFAULT_BEAM: usize = 5;
/// GNMT's length-penalty exponent, which the paper also used (§6.1).
pub const DEFAULT_ALPHA: f64 = 0.6;

impl BeamOptions {
    /// Beam 5, α 0.6, at most `1.5 · source + 10` tokens ([`OutputLimit::default`]).
    pub fn new(bos: usize, eos: usize) -> Self {
        Self {
            bos,
            eos,
            beam_size: DEFAULT_BEAM,
            alpha: DEFAULT_ALPHA,
            max_output: OutputLimit::default(),
            ranking: BeamRanking::Gnmt,
            forbidden: None,
        }
    }

    /// The length penalty of a hypothesis of `len` tokens, that its log-probability is divided
    /// by: GNMT's `((5 + len) / 6)^α`, or `len^α` as `transformers` has it.
    pub fn length_penalty(&self, len: usize) -> f64 {
        match self.ranking {
            BeamRanking::Gnmt => ((5.0 + len as f64) / 6.0).powf(self.alpha),
            BeamRanking::Transformers { .. } => (len as f64).powf(self.alpha),
        }
    }
}

/// One finished hypothesis.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// Its tokens, without BOS and EOS.
    pub tokens: Vec<usize>,
    /// Sum of the log-probabilities of its tokens, EOS included when it ended with one.
    pub log_prob: f64,
    /// `log_prob` over the length penalty of its tokens (EOS counted): what ranks it.
    pub score: f64,
}

/// A prefix still being extended.
#[derive(Clone, Debug)]
struct Live {
    tokens: Vec<usize>,
    log_prob: f64,
}

/// A sentence still being searched: its live beams, one batch row each, in order.
struct Searching {
    sentence: usize,
    beams: Vec<Live>,
    max_tokens: usize,
}

/// One extension of a beam: its log-probability, the beam's index and the token.
type Extension = (f64, usize, usize);

/// The `n` best extensions of `beams` (ties: lower beam, then lower token), best first, from
/// each beam's best next tokens (`n` of them, since the sentence's `n` best lie among those).
fn best_extensions(beams: &[Live], next: &[Vec<Candidate>], n: usize) -> Vec<Extension> {
    let mut candidates: Vec<Extension> = beams
        .iter()
        .zip(next)
        .enumerate()
        .flat_map(|(j, (beam, tokens))| {
            tokens
                .iter()
                .map(move |&(lp, t)| (beam.log_prob + lp as f64, j, t))
        })
        .collect();
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    candidates.truncate(n);
    candidates
}

impl Transformer {
    /// Beam search for every source sentence; returns each sentence's finished hypotheses, best
    /// first (at most `beam_size`).
    ///
    /// The batch holds only live beams: a sentence starts as one row (its beams are one prefix
    /// until the first step fans them out), and its rows leave the batch, cache and memory
    /// included, once it is done. The encoder runs once per sentence.
    ///
    /// # Shapes
    /// - `src`: `[batch, src_len]` token ids
    /// - `src_pad_mask`: `[batch, src_len]`, `true` = padding
    pub fn beam_search(
        &self,
        src: Tensor<2, Int>,
        src_pad_mask: Option<Tensor<2, Bool>>,
        options: &BeamOptions,
    ) -> Result<Vec<Vec<Hypothesis>>, DecodeError> {
        let [batch, src_len] = src.dims();
        let max_positions = self.max_len();
        DecodeError::check_source(src_len, max_positions)?;
        let k = options.beam_size.max(1);
        let device = src.device();
        let lengths: Vec<usize> = match &src_pad_mask {
            Some(mask) => mask
                .clone()
                .bool_not()
                .int()
                .sum_dim(1)
                .try_into_vec_as::<i64>()
                .expect("lengths read back")
                .into_iter()
                .map(|l| l as usize)
                .collect(),
            None => vec![src_len; batch],
        };
        let mut cache = self.new_cache(&self.encode(src, src_pad_mask));
        let mut searching: Vec<Searching> = lengths
            .iter()
            .enumerate()
            .map(|(sentence, &len)| Searching {
                sentence,
                beams: vec![Live {
                    tokens: Vec::new(),
                    log_prob: 0.0,
                }],
                // The decoder's inputs are BOS and the tokens before the last: at most the
                // model's positions.
                max_tokens: options.max_output.clamped(len, max_positions),
            })
            .collect();
        let mut finished: Vec<Vec<Hypothesis>> = vec![Vec::new(); batch];
        let finish = |tokens: Vec<usize>, log_prob: f64, with_eos: bool| {
            let len = tokens.len() + usize::from(with_eos);
            Hypothesis {
                tokens,
                log_prob,
                score: log_prob / options.length_penalty(len),
            }
        };

        for step in 0.. {
            let last: Vec<i64> = searching
                .iter()
                .flat_map(|s| &s.beams)
                .map(|b| *b.tokens.last().unwrap_or(&options.bos) as i64)
                .collect();
            let rows = last.len();
            let row_sentence: Vec<usize> = searching
                .iter()
                .flat_map(|s| std::iter::repeat_n(s.sentence, s.beams.len()))
                .collect();
            let input = Tensor::<2, Int>::from_data(TensorData::new(last, [rows, 1]), &device);
            let logits = self.decode(input, DecodeContext::Cached(&mut cache), None); // [rows, 1, vocab]
            let vocab = logits.dims()[2];
            let mut next = best_next_tokens(
                logits.reshape([rows, vocab]),
                2 * k + usize::from(options.forbidden.is_some()),
            );
            if let Some(forbidden) = options.forbidden {
                for candidates in &mut next {
                    candidates.retain(|&(_, token)| token != forbidden);
                    candidates.truncate(2 * k);
                }
            }

            // Each row of the next step names the row it continues.
            let mut parents: Vec<i64> = Vec::with_capacity(rows * k);
            let mut first_row = 0;
            let mut still = Vec::with_capacity(searching.len());
            for mut s in searching {
                let n = s.beams.len();
                let rows_of = &next[first_row..first_row + n];
                let at_limit = step + 1 >= s.max_tokens;
                let done = &mut finished[s.sentence];
                let forced_eos = options.ranking == BeamRanking::Transformers { forced_eos: true };
                let first_parent = parents.len();
                let mut next: Vec<Live> = Vec::with_capacity(k);
                for (rank, (log_prob, j, token)) in best_extensions(&s.beams, rows_of, 2 * k)
                    .into_iter()
                    .enumerate()
                {
                    if next.len() == k {
                        break;
                    }
                    let mut tokens = s.beams[j].tokens.clone();
                    if token == options.eos {
                        // An ending counts only if it ranks among the k best (and not where a
                        // forced EOS ends every beam instead).
                        if rank < k && !(at_limit && forced_eos) {
                            done.push(finish(tokens, log_prob, true));
                        }
                        continue;
                    }
                    tokens.push(token);
                    next.push(Live { tokens, log_prob });
                    parents.push((first_row + j) as i64);
                }
                first_row += n;
                if at_limit && forced_eos {
                    // The forced EOS of each beam's parent replaces this step's tokens; its
                    // log-probability is 0 once forced.
                    done.extend(
                        s.beams
                            .drain(..)
                            .map(|b| finish(b.tokens, b.log_prob, true)),
                    );
                    next.clear();
                } else if at_limit {
                    done.extend(next.drain(..).map(|b| finish(b.tokens, b.log_prob, false)));
                }
                let finished_here = match options.ranking {
                    // Done once k hypotheses have ended, or the length limit is reached.
                    BeamRanking::Gnmt => done.len() >= k,
                    BeamRanking::Transformers { .. } => {
                        // The k best endings are kept; once there are k, a sentence is done
                        // when its best live beam, scored at its length, cannot beat the worst.
                        done.sort_by(|a, b| b.score.total_cmp(&a.score));
                        done.truncate(k);
                        done.len() >= k
                            && next.first().is_none_or(|best| {
                                best.log_prob / options.length_penalty(step + 1)
                                    <= done[k - 1].score
                            })
                    }
                };
                if finished_here || next.is_empty() {
                    parents.truncate(first_parent);
                } else {
                    s.beams = next;
                    still.push(s);
                }
            }
            searching = still;
            if searching.is_empty() {
                break;
            }
            // Rows that stay in place need no copy; the cross-attention memory moves only when
            // a row changes sentence (the batch shrank, or a sentence fanned out).
            let in_place = parents.len() == rows;
            if in_place && parents.iter().enumerate().all(|(i, &p)| p as usize == i) {
                continue;
            }
            let memory_moves = !in_place
                || parents
                    .iter()
                    .enumerate()
                    .any(|(i, &p)| row_sentence[i] != row_sentence[p as usize]);
            let n = parents.len();
            let parents = Tensor::<1, Int>::from_data(TensorData::new(parents, [n]), &device);
            if memory_moves {
                cache.select_rows(parents);
            } else {
                cache.reorder_beams(parents); // beams trade places within their sentence
            }
        }
        for hypotheses in &mut finished {
            hypotheses.sort_by(|a, b| b.score.total_cmp(&a.score));
            hypotheses.truncate(k);
        }
        Ok(finished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ranking_has_its_length_penalty() {
        let gnmt = BeamOptions {
            alpha: 1.0,
            ..BeamOptions::new(1, 2)
        };
        // ((5 + 7) / 6)^1 = 2; 4^0.5 = 2.
        assert!((gnmt.length_penalty(7) - 2.0).abs() < 1e-12);
        let transformers = BeamOptions {
            alpha: 0.5,
            ranking: BeamRanking::Transformers { forced_eos: true },
            ..BeamOptions::new(1, 2)
        };
        assert!((transformers.length_penalty(4) - 2.0).abs() < 1e-12);
    }
    use crate::config::TransformerConfig;
    use crate::greedy::GreedyOptions;
    use burn::tensor::Device;
    use burn::tensor::activation::log_softmax;

    fn model(seed: u64, device: &Device) -> Transformer {
        device.seed(seed);
        TransformerConfig::tiny(9, 9).with_max_len(16).init(device)
    }

    /// Sum of log-probabilities of `tokens` (and EOS, when `with_eos`) under teacher forcing.
    fn log_prob(model: &Transformer, src: &[i64], tokens: &[usize], with_eos: bool) -> f64 {
        let device = Device::flex();
        let src =
            Tensor::<2, Int>::from_data(TensorData::new(src.to_vec(), [1, src.len()]), &device);
        let mut input = vec![1i64];
        input.extend(tokens.iter().map(|&t| t as i64));
        let mut target: Vec<usize> = tokens.to_vec();
        if with_eos {
            target.push(2);
        } else {
            input.pop();
        }
        let n = input.len();
        let tgt = Tensor::<2, Int>::from_data(TensorData::new(input, [1, n]), &device);
        let logits = model.forward(src, tgt, None, None);
        let log_probs = log_softmax(logits, 2)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let vocab = log_probs.len() / n;
        target
            .iter()
            .enumerate()
            .map(|(i, &t)| log_probs[i * vocab + t] as f64)
            .sum()
    }

    #[test]
    fn best_extensions_rank_prefix_plus_token_log_probability_across_beams() {
        let beams = [
            Live {
                tokens: vec![5],
                log_prob: -1.0,
            },
            Live {
                tokens: vec![6],
                log_prob: -0.5,
            },
        ];
        // Beam 0's best token totals -1.25; beam 1's two best total -1.0 and -1.25 (the tie
        // goes to the lower beam).
        let next = [vec![(-0.25, 0), (-2.0, 2)], vec![(-0.5, 0), (-0.75, 1)]];
        assert_eq!(
            best_extensions(&beams, &next, 3),
            vec![(-1.0, 1, 0), (-1.25, 0, 0), (-1.25, 1, 1)]
        );
    }

    #[test]
    fn beam_one_is_greedy() {
        let device = Device::flex();
        for seed in 0..5 {
            let model = model(seed, &device);
            let src = Tensor::<2, Int>::from_ints([[3, 4, 5, 6], [7, 8, 3, 0]], &device);
            let pad = src.clone().equal_elem(0);
            let options = BeamOptions {
                beam_size: 1,
                max_output: OutputLimit {
                    per_source_token: 0.0,
                    extra: 10,
                },
                ..BeamOptions::new(1, 2)
            };
            let beam = model
                .beam_search(src.clone(), Some(pad.clone()), &options)
                .unwrap();
            let greedy = model
                .greedy_decode(src, Some(pad), &GreedyOptions::new(1, 2, 10))
                .unwrap();
            let best: Vec<Vec<usize>> = beam.iter().map(|h| h[0].tokens.clone()).collect();
            assert_eq!(best, greedy, "seed {seed}");
        }
    }

    #[test]
    fn a_forbidden_token_is_never_generated_by_beam_search_or_greedy_decoding() {
        let device = Device::flex();
        let src = Tensor::<2, Int>::from_ints([[3, 4, 5, 6]], &device);
        let limit = OutputLimit {
            per_source_token: 0.0,
            extra: 8,
        };
        let (mut beams_checked, mut greedy_checked) = (0, 0);
        // Models whose best output starts with a token (not EOS at once): forbid that token.
        for seed in 0..10 {
            let model = model(seed, &device);
            let options = BeamOptions {
                beam_size: 3,
                max_output: limit,
                ..BeamOptions::new(1, 2)
            };
            let free = model.beam_search(src.clone(), None, &options).unwrap();
            if let Some(&first) = free[0][0].tokens.first() {
                let forbidding = BeamOptions {
                    forbidden: Some(first),
                    ..options
                };
                for hypothesis in &model.beam_search(src.clone(), None, &forbidding).unwrap()[0] {
                    assert!(!hypothesis.tokens.contains(&first), "{hypothesis:?}");
                }
                beams_checked += 1;
            }
            let greedy = GreedyOptions::new(1, 2, 8);
            let free = model.greedy_decode(src.clone(), None, &greedy).unwrap();
            if let Some(&first) = free[0].first() {
                let forbidding = greedy.with_forbidden(Some(first));
                let tokens = model.greedy_decode(src.clone(), None, &forbidding).unwrap();
                assert!(!tokens[0].contains(&first), "{tokens:?}");
                greedy_checked += 1;
            }
        }
        assert!(beams_checked > 0 && greedy_checked > 0);
    }

    /// What beam search guarantees, and no more: every hypothesis it returns carries the
    /// model's own log-probability of its tokens (and EOS, when it ended with one) and the
    /// length-penalised score of that, best first. (It does not guarantee beating greedy
    /// decoding: a prefix greedy would extend can fall out of the beam.)
    #[test]
    fn every_hypothesis_carries_the_model_s_log_probability_and_its_score() {
        let device = Device::flex();
        for seed in 0..4 {
            let model = model(100 + seed, &device);
            let source = [3i64, 5, 7, 4, 6];
            let src =
                Tensor::<2, Int>::from_data(TensorData::new(source.to_vec(), [1, 5]), &device);
            let options = BeamOptions {
                beam_size: 4,
                alpha: 0.6,
                max_output: OutputLimit {
                    per_source_token: 0.0,
                    extra: 8,
                },
                ..BeamOptions::new(1, 2)
            };
            let hypotheses = &model.beam_search(src, None, &options).unwrap()[0];
            assert!(!hypotheses.is_empty());
            for h in hypotheses {
                let ended = h.tokens.len() < 8;
                let expected = log_prob(&model, &source, &h.tokens, ended);
                assert!((h.log_prob - expected).abs() < 1e-4, "seed {seed}: {h:?}");
                let length = h.tokens.len() + usize::from(ended);
                let score = h.log_prob / options.length_penalty(length);
                assert!((h.score - score).abs() < 1e-9, "seed {seed}: {h:?}");
            }
            assert!(hypotheses.windows(2).all(|w| w[0].score >= w[1].score));
        }
    }

    #[test]
    fn a_batch_finds_what_each_sentence_finds_alone() {
        let device = Device::flex();
        let model = model(21, &device);
        let options = BeamOptions::new(1, 2);
        let src = Tensor::<2, Int>::from_ints(
            [[3, 4, 5, 6, 7], [8, 3, 0, 0, 0], [5, 5, 6, 0, 0]],
            &device,
        );
        let pad = src.clone().equal_elem(0);
        let together = model.beam_search(src, Some(pad), &options).unwrap();
        for (i, row) in [vec![3, 4, 5, 6, 7], vec![8, 3], vec![5, 5, 6]]
            .into_iter()
            .enumerate()
        {
            let n = row.len();
            let alone_src = Tensor::<2, Int>::from_data(TensorData::new(row, [1, n]), &device);
            let alone = model.beam_search(alone_src, None, &options).unwrap();
            assert_eq!(alone[0][0].tokens, together[i][0].tokens, "sentence {i}");
            assert!((alone[0][0].log_prob - together[i][0].log_prob).abs() < 1e-4);
        }
    }

    #[test]
    fn hypotheses_are_ranked_by_length_penalised_score() {
        let device = Device::flex();
        let model = model(7, &device);
        let src = Tensor::<2, Int>::from_ints([[3, 4, 5]], &device);
        let options = BeamOptions {
            max_output: OutputLimit {
                per_source_token: 0.0,
                extra: 6,
            },
            ..BeamOptions::new(1, 2)
        };
        let hyps = &model.beam_search(src, None, &options).unwrap()[0];
        assert!(!hyps.is_empty() && hyps.len() <= 5);
        assert!(hyps.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(
            hyps.iter()
                .all(|h| h.tokens.len() <= 6 && !h.tokens.contains(&2))
        );
        assert!((options.length_penalty(1) - 1.0).abs() < 1e-12);
        assert!(
            (BeamOptions {
                alpha: 1.0,
                ..options
            }
            .length_penalty(7)
                - 2.0)
                .abs()
                < 1e-12
        );
    }
}
