//! How good a model is: greedy accuracy on synthetic tasks, corpus BLEU equal to sacreBLEU's,
//! translating sentences with greedy or beam search, the length penalty chosen on held-out
//! data, and validation during training.

pub mod accuracy;
pub mod bleu;
pub mod length_penalty;
pub mod translate;
pub mod validation;
