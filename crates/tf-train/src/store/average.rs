//! Checkpoint averaging, as the paper did (§6.1: the base models averaged their last 5
//! checkpoints): every parameter of the result is the mean of that parameter over the models.
//! One implementation for the end of a translation run and for `tf average`.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};
use tf_model::Transformer;

use crate::error::{Result, bail};
use crate::store::model_dir::ModelDir;

/// Every float parameter of a module, in visiting order, as `f32` values.
struct CollectFloats(Vec<Vec<f32>>);

impl ModuleVisitor for CollectFloats {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(
            param
                .val()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("f32 values"),
        );
    }
}

/// Replaces each float parameter, in visiting order, by the next of `values`.
struct ReplaceFloats(std::vec::IntoIter<Vec<f32>>);

impl ModuleMapper for ReplaceFloats {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let values = self.0.next().expect("one value list per parameter");
        param.map(|tensor| {
            let shape = tensor.shape();
            Tensor::from_data(TensorData::new(values, shape), &tensor.device())
        })
    }
}

/// Every float parameter of `model`, in visiting order, as `f32` values: what two models are
/// compared by (their weight files also hold each parameter's random id).
pub fn parameter_values(model: &Transformer) -> Vec<Vec<f32>> {
    let mut collect = CollectFloats(Vec::new());
    model.visit(&mut collect);
    collect.0
}

/// The parameter-wise mean of `models`, which must share one configuration.
///
/// # Errors
/// If `models` is empty or their parameters differ in number or size.
pub fn average_models(models: Vec<Transformer>) -> Result<Transformer> {
    let n = models.len();
    let mut models = models.into_iter();
    let Some(first) = models.next() else {
        bail!("nothing to average");
    };
    let mut sums = parameter_values(&first);
    for model in models {
        let values = parameter_values(&model);
        if values.len() != sums.len() || values.iter().zip(&sums).any(|(a, b)| a.len() != b.len()) {
            bail!("the checkpoints do not share one architecture");
        }
        for (sum, values) in sums.iter_mut().zip(values) {
            for (s, v) in sum.iter_mut().zip(values) {
                *s += v;
            }
        }
    }
    for sum in &mut sums {
        for s in sum.iter_mut() {
            *s /= n as f32;
        }
    }
    Ok(first.map(&mut ReplaceFloats(sums.into_iter())))
}

/// The mean of some of a run's checkpoints, and which.
#[derive(Debug)]
pub struct AveragedCheckpoints {
    /// The checkpoints averaged, oldest first (`step-NNNNNNNN`).
    pub names: Vec<String>,
    /// Their parameter-wise mean.
    pub model: Transformer,
}

impl ModelDir {
    /// The mean of the newest `last` checkpoints (at least 1), on `device`.
    ///
    /// # Errors
    /// If the run has fewer checkpoints than `last`, or one cannot be loaded.
    pub fn average_checkpoints(&self, last: usize, device: &Device) -> Result<AveragedCheckpoints> {
        if last == 0 {
            bail!("averaging needs at least one checkpoint");
        }
        let names = self.checkpoint_names()?;
        if names.len() < last {
            bail!(
                "{} has {} checkpoint(s), fewer than the {last} to average (train with \
                 --keep-checkpoints {last} or more)",
                self.path().display(),
                names.len()
            );
        }
        let names = names[names.len() - last..].to_vec();
        let models = names
            .iter()
            .map(|name| self.load_checkpoint_model(name, device))
            .collect::<Result<Vec<_>>>()?;
        Ok(AveragedCheckpoints {
            names,
            model: average_models(models)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::task::{Task, TaskKind};
    use burn::tensor::{Device, Int};

    fn logits(model: &Transformer, device: &Device) -> Vec<f32> {
        let src = Tensor::<2, Int>::from_ints([[3, 4, 5]], device);
        let tgt = Tensor::<2, Int>::from_ints([[1, 5, 4]], device);
        model
            .forward(src, tgt, None, None)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn the_mean_of_copies_is_the_model_and_of_two_is_halfway() {
        let device = Device::flex();
        let task = Task::new(TaskKind::Reverse, 5, 1, 5).unwrap();
        device.seed(1);
        let a = task.tiny_model().init(&device);
        device.seed(2);
        let b = task.tiny_model().init(&device);
        let same = average_models(vec![a.clone(), a.clone(), a.clone()]).unwrap();
        let diff = logits(&same, &device)
            .iter()
            .zip(logits(&a, &device))
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-5, "{diff}");
        let mean = average_models(vec![a.clone(), b.clone()]).unwrap();
        let table = |m: &Transformer| {
            m.src_embedding
                .weight()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        let (ta, tb, tm) = (table(&a), table(&b), table(&mean));
        assert!(
            tm.iter()
                .zip(ta.iter().zip(&tb))
                .all(|(m, (x, y))| (m - (x + y) / 2.0).abs() < 1e-6)
        );
        assert!(average_models(Vec::new()).is_err());
    }
}
