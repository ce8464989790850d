//! The same weights give the same numbers on every backend: NdArray, Flex and WGPU (on a
//! machine without a GPU, WGPU runs on Mesa's lavapipe Vulkan driver).

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Device, DeviceKind, Int, Tensor};
use tf_layers::{PositionalEncodingKind, TransformerLayerConfig};
use tf_model::{GreedyOptions, TransformerConfig};
use tf_tests::max_abs_diff;

fn config(positional: PositionalEncodingKind) -> TransformerConfig {
    TransformerConfig::tiny(17, 17)
        .with_layer(
            TransformerLayerConfig::tiny()
                .with_n_heads(4)
                .with_d_model(32),
        )
        .with_positional_encoding(positional)
}

#[test]
fn ndarray_flex_and_wgpu_agree_within_1e4() {
    agree_within_1e4(PositionalEncodingKind::Sinusoidal);
}

#[test]
fn rotary_positions_agree_within_1e4() {
    agree_within_1e4(PositionalEncodingKind::Rotary);
}

fn agree_within_1e4(positional: PositionalEncodingKind) {
    let config = || config(positional);
    let reference_device = Device::flex();
    reference_device.seed(3);
    let reference = config().init(&reference_device);
    let bytes = reference.clone().into_record().into_bytes().unwrap();

    let inputs = |device: &Device| {
        let src = Tensor::<2, Int>::from_ints([[3, 4, 5, 6, 7], [8, 9, 10, 0, 0]], device);
        let tgt = Tensor::<2, Int>::from_ints([[1, 7, 6, 5], [1, 10, 9, 8]], device);
        let src_pad = src.clone().equal_elem(0);
        (src, tgt, src_pad)
    };
    let (src, tgt, src_pad) = inputs(&reference_device);
    let expected = reference.forward(src.clone(), tgt, Some(src_pad.clone()), None);
    let expected_tokens = reference
        .greedy_decode(src, Some(src_pad), &GreedyOptions::new(1, 2, 8))
        .unwrap();

    for (name, device) in [
        ("ndarray", tf_train::Backend::Ndarray.device()),
        ("wgpu", Device::wgpu(DeviceKind::DefaultDevice)),
    ] {
        let record = ModuleRecord::from_bytes(bytes.clone()).unwrap();
        let model = config().init(&device).load_record(record);
        let (src, tgt, src_pad) = inputs(&device);
        let logits = model.forward(src.clone(), tgt, Some(src_pad.clone()), None);
        let diff = max_abs_diff(logits.to_device(&reference_device), expected.clone());
        println!("{name}: max |logits - flex| = {diff:e}");
        assert!(diff <= 1e-4, "{name} differs from flex by {diff}");
        let tokens = model
            .greedy_decode(src, Some(src_pad), &GreedyOptions::new(1, 2, 8))
            .unwrap();
        assert_eq!(tokens, expected_tokens, "{name} decodes differently");
    }
}
