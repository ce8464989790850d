//! A seeded device gives the same dropout masks again: the fused dropout draws its seed from the
//! device's generator. Alone in its test binary, because that generator is one per process and
//! tests running beside it would draw from it between the seeding and the masks.

use burn::nn::DropoutConfig;
use burn::tensor::{Device, Tensor};
use tf_attention::fused::calls;
use tf_layers::fused_dropout::{OP, dropout};

#[test]
fn a_device_seed_gives_the_same_masks_again() {
    let device = Device::flex().autodiff();
    let module = DropoutConfig::new(0.3).init();
    let x = Tensor::<2>::ones([16, 32], &device);
    let mask = || {
        dropout(&module, x.clone())
            .try_into_vec_as::<f32>()
            .unwrap()
    };
    let masks = |seed: u64| {
        device.seed(seed);
        (mask(), mask())
    };
    let before = calls(OP);
    let (a1, a2) = masks(5);
    assert_eq!(
        calls(OP).forward,
        before.forward + 2,
        "the fused path on Flex"
    );
    assert_eq!((a1.clone(), a2.clone()), masks(5));
    assert_ne!(a1, a2, "two calls draw two seeds");
    assert_ne!(a1, masks(6).0);
}
