//! The shipped model stores its quantized weights as uint8 (zero point 128) because ONNX
//! Runtime multiplies uint8 activations by uint8 weights exactly on every CPU, while uint8 x int8
//! products saturate at 16 bits on x86 CPUs without VNNI. On CPUs with VNNI the uint8 x int8
//! kernel is exact too, and about twice as fast: there the weights are turned back into int8 in
//! memory before the session is built.
//!
//! The rewrite is exact: every weight and its zero point move by the same −128 (`x ^ 0x80` takes
//! a uint8 byte to the int8 byte 128 less), so every `w − zero_point` the kernels compute, and
//! with them the scores, stay bit-for-bit the same. It edits the protobuf in place — a data type
//! varint (2 → 3, one byte either way) and the `raw_data` bytes — so nothing is re-serialized and
//! every field the rewrite does not know survives untouched. Anything unexpected in the file
//! makes it give up with an error; the caller then runs the file as shipped (exact, slower).

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

/// Why the weights could not be rewritten (the model still runs as shipped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// The file is not the protobuf this module expects.
    #[error("model.onnx is not a well-formed ONNX protobuf ({0})")]
    Malformed(&'static str),
    /// A quantized product's weight or zero point is not a uint8 initializer with raw data.
    #[error("weight {0} of a quantized product is not a uint8 initializer with raw data")]
    Unsupported(String),
    /// No quantized product to rewrite.
    #[error("the model has no uint8 weights to rewrite")]
    Nothing,
}

/// Whether ONNX Runtime's uint8 x int8 kernel is exact on this CPU, following its kernel choice
/// (MLAS `platform.cpp`): x86 with AVX-512 VNNI, or with AVX-VNNI and no AVX-512 core (which
/// would replace the AVX-VNNI kernel with its saturating one); `vpdpbusd` accumulates in 32 bits.
/// Elsewhere (other x86 CPUs; other architectures, not measured) the uint8 weights are kept.
pub fn exact_signed_kernels() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let avx512_core =
            has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl");
        (avx512_core && has!("avx512vnni")) || (!avx512_core && has!("avxvnni"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

// ONNX field numbers (onnx.proto).
const MODEL_GRAPH: u32 = 7;
const GRAPH_NODE: u32 = 1;
const GRAPH_INITIALIZER: u32 = 5;
const NODE_INPUT: u32 = 1;
const NODE_OP_TYPE: u32 = 4;
const TENSOR_DATA_TYPE: u32 = 2;
const TENSOR_NAME: u32 = 8;
const TENSOR_RAW_DATA: u32 = 9;
const UINT8: u64 = 2;
const INT8: u8 = 3;

/// One field of a protobuf message: its number and where its payload lies in the buffer (for a
/// varint, the varint's bytes; for a length-delimited field, the bytes after the length).
struct Field {
    number: u32,
    varint: Option<u64>,
    payload: Range<usize>,
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, RewriteError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf
            .get(*pos)
            .ok_or(RewriteError::Malformed("truncated varint"))?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(RewriteError::Malformed("varint longer than 10 bytes"))
}

/// The fields of the message in `buf[range]`, in order.
fn fields(buf: &[u8], range: Range<usize>) -> Result<Vec<Field>, RewriteError> {
    let mut out = Vec::new();
    let mut pos = range.start;
    while pos < range.end {
        let key = varint(buf, &mut pos)?;
        let number =
            u32::try_from(key >> 3).map_err(|_| RewriteError::Malformed("field number"))?;
        let start = pos;
        let (varint_value, end) = match key & 7 {
            0 => {
                let v = varint(buf, &mut pos)?;
                (Some(v), pos)
            }
            1 => (None, pos + 8),
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?)
                    .map_err(|_| RewriteError::Malformed("length"))?;
                let from = pos;
                pos = from
                    .checked_add(len)
                    .ok_or(RewriteError::Malformed("length"))?;
                out.push(Field {
                    number,
                    varint: None,
                    payload: from..pos,
                });
                continue;
            }
            5 => (None, pos + 4),
            _ => return Err(RewriteError::Malformed("unknown wire type")),
        };
        pos = end;
        out.push(Field {
            number,
            varint: varint_value,
            payload: start..end,
        });
    }
    if pos != range.end {
        return Err(RewriteError::Malformed("field runs past its message"));
    }
    Ok(out)
}

fn string(buf: &[u8], range: Range<usize>) -> Result<String, RewriteError> {
    std::str::from_utf8(buf.get(range).ok_or(RewriteError::Malformed("range"))?)
        .map(str::to_owned)
        .map_err(|_| RewriteError::Malformed("name is not UTF-8"))
}

/// An initializer: where its data type varint and raw data are.
struct Initializer {
    data_type: Option<(u64, Range<usize>)>,
    raw_data: Option<Range<usize>>,
}

/// Rewrites the uint8 weights (and their zero points) of `MatMulInteger` and `QAttention` as
/// int8, in place; returns how many tensors changed. On error `model` is unchanged.
pub fn to_signed(model: &mut [u8]) -> Result<usize, RewriteError> {
    let graph = fields(model, 0..model.len())?
        .into_iter()
        .rfind(|f| f.number == MODEL_GRAPH && f.varint.is_none())
        .ok_or(RewriteError::Malformed("no graph"))?;
    let mut names: HashSet<String> = HashSet::new();
    let mut initializers: BTreeMap<String, Initializer> = BTreeMap::new();
    for field in fields(model, graph.payload)? {
        match field.number {
            GRAPH_NODE => {
                let node = fields(model, field.payload)?;
                let mut op = String::new();
                let mut inputs = Vec::new();
                for f in node {
                    match f.number {
                        NODE_OP_TYPE => op = string(model, f.payload)?,
                        NODE_INPUT => inputs.push(string(model, f.payload)?),
                        _ => {}
                    }
                }
                // Weight and weight zero point: inputs 1 and 3 of MatMulInteger, 1 and 7 of
                // QAttention (com.microsoft).
                let wanted: &[usize] = match op.as_str() {
                    "MatMulInteger" => &[1, 3],
                    "QAttention" => &[1, 7],
                    _ => continue,
                };
                for &i in wanted {
                    // A missing zero point would mean 0, which the shift cannot preserve.
                    let name = inputs
                        .get(i)
                        .filter(|n| !n.is_empty())
                        .ok_or_else(|| RewriteError::Unsupported(format!("{op} input {i}")))?;
                    names.insert(name.clone());
                }
            }
            GRAPH_INITIALIZER => {
                let mut name = String::new();
                let mut init = Initializer {
                    data_type: None,
                    raw_data: None,
                };
                for f in fields(model, field.payload)? {
                    match f.number {
                        TENSOR_NAME => name = string(model, f.payload)?,
                        TENSOR_DATA_TYPE => init.data_type = f.varint.map(|v| (v, f.payload)),
                        TENSOR_RAW_DATA => init.raw_data = Some(f.payload),
                        _ => {}
                    }
                }
                initializers.insert(name, init);
            }
            _ => {}
        }
    }
    if names.is_empty() {
        return Err(RewriteError::Nothing);
    }
    // Check every tensor before touching any, so an error leaves the model as it was.
    let mut edits = Vec::with_capacity(names.len());
    for name in &names {
        match initializers.get(name) {
            Some(Initializer {
                data_type: Some((UINT8, at)),
                raw_data: Some(raw),
            }) if at.len() == 1 => edits.push((at.start, raw.clone())),
            _ => return Err(RewriteError::Unsupported(name.clone())),
        }
    }
    for (at, raw) in &edits {
        if let Some(b) = model.get_mut(*at) {
            *b = INT8;
        }
        if let Some(bytes) = model.get_mut(raw.clone()) {
            bytes.iter_mut().for_each(|b| *b ^= 0x80);
        }
    }
    Ok(edits.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(number: u32, wire: u8) -> Vec<u8> {
        encode_varint(u64::from(number) << 3 | u64::from(wire))
    }

    fn encode_varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(number: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = key(number, 2);
        out.extend(encode_varint(payload.len() as u64));
        out.extend_from_slice(payload);
        out
    }

    fn varint_field(number: u32, v: u64) -> Vec<u8> {
        let mut out = key(number, 0);
        out.extend(encode_varint(v));
        out
    }

    fn tensor(name: &str, data_type: u64, raw: &[u8]) -> Vec<u8> {
        let mut t = varint_field(1, raw.len() as u64); // dims
        t.extend(varint_field(TENSOR_DATA_TYPE, data_type));
        t.extend(bytes_field(TENSOR_NAME, name.as_bytes()));
        t.extend(bytes_field(TENSOR_RAW_DATA, raw));
        t.extend(bytes_field(12, b"kept as is")); // doc_string
        t
    }

    fn node(op: &str, inputs: &[&str]) -> Vec<u8> {
        let mut n = Vec::new();
        for i in inputs {
            n.extend(bytes_field(NODE_INPUT, i.as_bytes()));
        }
        n.extend(bytes_field(NODE_OP_TYPE, op.as_bytes()));
        n
    }

    fn model(nodes: &[Vec<u8>], tensors: &[Vec<u8>]) -> Vec<u8> {
        let mut g = Vec::new();
        for n in nodes {
            g.extend(bytes_field(GRAPH_NODE, n));
        }
        for t in tensors {
            g.extend(bytes_field(GRAPH_INITIALIZER, t));
        }
        let mut m = varint_field(1, 8); // ir_version
        m.extend(bytes_field(MODEL_GRAPH, &g));
        m
    }

    #[test]
    fn weights_and_zero_points_move_together_and_nothing_else_changes() {
        let original = model(
            &[
                node("MatMulInteger", &["x", "w", "", "w_zp"]),
                node("Add", &["y", "bias"]),
            ],
            &[
                tensor("w", UINT8, &[0, 127, 128, 255]),
                tensor("w_zp", UINT8, &[128, 130]),
                tensor("bias", UINT8, &[7]),
            ],
        );
        let mut m = original.clone();
        assert_eq!(to_signed(&mut m), Ok(2));
        let expected = model(
            &[
                node("MatMulInteger", &["x", "w", "", "w_zp"]),
                node("Add", &["y", "bias"]),
            ],
            &[
                tensor("w", 3, &[0x80, 0xff, 0x00, 0x7f]),
                tensor("w_zp", 3, &[0x00, 0x02]),
                tensor("bias", UINT8, &[7]),
            ],
        );
        assert_eq!(m, expected);
        // What the kernels compute, w − zero point, is unchanged.
        let unsigned = |w: u8, zp: u8| i16::from(w) - i16::from(zp);
        let signed =
            |w: u8, zp: u8| i16::from(i8::from_ne_bytes([w])) - i16::from(i8::from_ne_bytes([zp]));
        for (w, zp) in [(0, 128), (255, 130), (127, 128), (128, 130)] {
            assert_eq!(unsigned(w, zp), signed(w ^ 0x80, zp ^ 0x80));
        }
    }

    #[test]
    fn a_product_without_a_zero_point_or_with_int8_weights_is_left_alone() {
        for original in [
            model(
                &[node("MatMulInteger", &["x", "w"])],
                &[tensor("w", UINT8, &[1, 2])],
            ),
            model(
                &[node("MatMulInteger", &["x", "w", "", "zp"])],
                &[tensor("w", 3, &[1, 2]), tensor("zp", 3, &[0])],
            ),
            model(&[node("Add", &["x", "w"])], &[tensor("w", UINT8, &[1])]),
        ] {
            let mut m = original.clone();
            assert!(to_signed(&mut m).is_err());
            assert_eq!(m, original, "an error leaves the model unchanged");
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = model(
            &[node(
                "QAttention",
                &["x", "w", "b", "s", "ws", "m", "xz", "wz"],
            )],
            &[tensor("w", UINT8, &[1]), tensor("wz", UINT8, &[128])],
        );
        let mut copy = good.clone();
        assert_eq!(to_signed(&mut copy), Ok(2));
        for cut in 0..good.len() {
            let mut m = good[..cut].to_vec();
            let _ = to_signed(&mut m);
        }
        let mut junk = vec![0xff; 16];
        assert!(to_signed(&mut junk).is_err());
    }
}
