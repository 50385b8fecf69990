//! Scalars from TensorBoard event files (`events.out.tfevents.*`), as
//! written by tensorboardX, `torch.utils.tensorboard` and TensorFlow.
//!
//! Jobs already log their metrics this way, so reading these files gives
//! kiln training curves without asking anyone to change their code. Only
//! scalars are read: they are what the job views plot, and everything else
//! in these files (images, histograms, text, graphs) can be large and is
//! skipped without being decoded.
//!
//! The file is a sequence of TFRecords, each one:
//!
//! ```text
//! u64 little-endian length
//! u32 masked crc32c of the 8 length bytes
//! [u8; length] a serialized tensorflow.Event
//! u32 masked crc32c of the data
//! ```
//!
//! The protobuf messages are declared by hand below, with only the fields
//! kiln reads: prost skips every other field on the wire, so no `.proto`
//! files, build script or protoc are needed, and the parts of an event we
//! do not use are never allocated.

use crate::error::MetricsError;

/// One point of a training curve.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Scalar {
    pub tag: String,
    pub step: i64,
    /// Seconds since the Unix epoch when the job logged the value.
    pub wall_time: f64,
    /// Widened from `f32` for most writers, which store single precision.
    pub value: f64,
}

/// Length (8 bytes) and its CRC (4 bytes).
const HEADER_LEN: usize = 12;
/// The CRC after the data.
const FOOTER_LEN: usize = 4;
/// Real records are a few bytes to a few MiB (an image); a length beyond
/// this is far likelier a damaged or foreign file than data, and trusting
/// it would make a caller wait forever for bytes that never come.
const MAX_RECORD_LEN: u64 = 256 << 20;

/// `tensorflow.DataType` values a scalar may be stored as.
const DT_FLOAT: i32 = 1;
const DT_DOUBLE: i32 = 2;

/// Parses whole records from `bytes` (the file's content from some offset).
///
/// Returns the scalars found and how many bytes were consumed. The job is
/// still appending to the file, so a record cut short at the end is most
/// likely half written rather than damaged: it is not consumed, and the
/// caller re-reads from `base_offset + consumed` once the file has grown.
/// `consumed` always ends on a record boundary.
///
/// A record whose CRC is wrong, whose length is absurd or whose data is not
/// an event is an error ([`MetricsError::Corrupt`], with the file offset of
/// the record's start taken from `base_offset`): the bytes that follow it
/// cannot be trusted to start a record, so there is no way to resume.
pub fn read_records(bytes: &[u8], base_offset: u64) -> Result<(Vec<Scalar>, usize), MetricsError> {
    let mut scalars = Vec::new();
    let mut pos = 0usize;
    while let Some(record) = next_record(bytes, pos, base_offset)? {
        scalars.extend(event_scalars(record.data, record_offset(base_offset, pos))?);
        pos = record.end;
    }
    Ok((scalars, pos))
}

struct Record<'a> {
    data: &'a [u8],
    /// Index in the buffer just past this record.
    end: usize,
}

/// The record starting at `pos`, or `None` when the buffer ends before it
/// does (not yet written).
fn next_record(
    bytes: &[u8],
    pos: usize,
    base_offset: u64,
) -> Result<Option<Record<'_>>, MetricsError> {
    let corrupt = |reason: String| MetricsError::Corrupt {
        offset: record_offset(base_offset, pos),
        reason,
    };
    let rest = bytes.get(pos..).unwrap_or_default();
    let Some((header, after_header)) = rest.split_first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let (len_bytes, len_crc) = split_u32_suffix(header);
    // The length is checked before it is believed, so that garbage is
    // reported here instead of looking like a record still being written.
    if masked_crc(len_bytes) != len_crc {
        return Err(corrupt("length checksum mismatch".to_string()));
    }
    let mut len_le = [0u8; 8];
    len_le.copy_from_slice(len_bytes);
    let len = u64::from_le_bytes(len_le);
    if len > MAX_RECORD_LEN {
        return Err(corrupt(format!(
            "record length {len} exceeds the {MAX_RECORD_LEN}-byte limit"
        )));
    }
    // Cannot fail after the limit check, but a failure must not panic.
    let len =
        usize::try_from(len).map_err(|_| corrupt(format!("record length {len} too large")))?;
    let Some(with_footer) = after_header.get(..len.saturating_add(FOOTER_LEN)) else {
        return Ok(None);
    };
    let (data, data_crc) = split_u32_suffix(with_footer);
    if masked_crc(data) != data_crc {
        return Err(corrupt("data checksum mismatch".to_string()));
    }
    Ok(Some(Record {
        data,
        end: pos + HEADER_LEN + len + FOOTER_LEN,
    }))
}

/// Splits off the trailing little-endian u32 (a stored CRC). The slice is
/// at least 4 bytes long in every caller.
fn split_u32_suffix(bytes: &[u8]) -> (&[u8], u32) {
    match bytes.split_last_chunk::<4>() {
        Some((head, tail)) => (head, u32::from_le_bytes(*tail)),
        None => (bytes, 0),
    }
}

fn record_offset(base_offset: u64, pos: usize) -> u64 {
    base_offset.saturating_add(u64::try_from(pos).unwrap_or(u64::MAX))
}

/// TFRecord masks its CRCs so that a CRC computed over data which itself
/// embeds CRCs stays well distributed; the mask has to be undone exactly
/// as the writers apply it.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn event_scalars(data: &[u8], offset: u64) -> Result<Vec<Scalar>, MetricsError> {
    let event = <Event as prost::Message>::decode(data).map_err(|e| MetricsError::Corrupt {
        offset,
        reason: format!("record is not a tensorflow.Event: {e}"),
    })?;
    let Some(summary) = event.summary else {
        // The file-version header, graphs, session logs: nothing to plot.
        return Ok(Vec::new());
    };
    Ok(summary
        .value
        .into_iter()
        .filter_map(|value| {
            let number = value.scalar()?;
            Some(Scalar {
                tag: value.name(),
                step: event.step,
                wall_time: event.wall_time,
                value: number,
            })
        })
        .collect())
}

/// `tensorflow.Event`, less the fields kiln has no use for (file_version,
/// graph_def, log_message, ...). Leaving out `file_version` also means a
/// malformed string there cannot make the record undecodable.
#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(message, optional, tag = "5")]
    summary: Option<Summary>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value`, without the image, histogram and audio
/// variants, which are therefore skipped unparsed.
#[derive(Clone, PartialEq, prost::Message)]
struct SummaryValue {
    /// Bytes rather than `string`: a tag that is not UTF-8 is still the
    /// name the job gave its series, and refusing the whole file over it
    /// would lose every other curve too.
    #[prost(bytes = "vec", tag = "1")]
    tag: Vec<u8>,
    /// Presence matters (it is a oneof member): a logged 0.0 is a value.
    #[prost(float, optional, tag = "2")]
    simple_value: Option<f32>,
    /// The pre-`tag` name, still found in some old files.
    #[prost(bytes = "vec", tag = "7")]
    node_name: Vec<u8>,
    #[prost(message, optional, tag = "8")]
    tensor: Option<TensorProto>,
    #[prost(message, optional, tag = "9")]
    metadata: Option<SummaryMetadata>,
}

impl SummaryValue {
    fn name(&self) -> String {
        let name = if self.tag.is_empty() {
            &self.node_name
        } else {
            &self.tag
        };
        String::from_utf8_lossy(name).into_owned()
    }

    /// The value, if this is a scalar.
    ///
    /// Old-style writers use `simple_value`. New-style ones (TF2, and
    /// torch's `new_style=True`) store a one-element tensor tagged with the
    /// "scalars" plugin. TF2 writes that metadata only with the first value
    /// of each tag, and this parser is stateless across calls, so a float
    /// tensor with no plugin named is taken as a scalar too; tensors that
    /// name another plugin (text, histograms, PR curves, ...) are not.
    fn scalar(&self) -> Option<f64> {
        if let Some(v) = self.simple_value {
            return Some(f64::from(v));
        }
        let tensor = self.tensor.as_ref()?;
        let plugin = self
            .metadata
            .as_ref()
            .and_then(|m| m.plugin_data.as_ref())
            .map(|p| p.plugin_name.as_slice())
            .unwrap_or_default();
        if !plugin.is_empty() && plugin != b"scalars" {
            return None;
        }
        tensor.single_value()
    }
}

/// `tensorflow.SummaryMetadata`, only for the plugin name.
#[derive(Clone, PartialEq, prost::Message)]
struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    plugin_data: Option<PluginData>,
}

/// `tensorflow.SummaryMetadata.PluginData`.
#[derive(Clone, PartialEq, prost::Message)]
struct PluginData {
    #[prost(bytes = "vec", tag = "1")]
    plugin_name: Vec<u8>,
}

/// `tensorflow.TensorProto`, only as far as float and double scalars go.
#[derive(Clone, PartialEq, prost::Message)]
struct TensorProto {
    /// `tensorflow.DataType`, kept as a raw number so that dtypes this
    /// parser does not know are skipped instead of failing the decode.
    #[prost(int32, tag = "1")]
    dtype: i32,
    #[prost(message, optional, tag = "2")]
    tensor_shape: Option<TensorShapeProto>,
    #[prost(bytes = "vec", tag = "4")]
    tensor_content: Vec<u8>,
    #[prost(float, repeated, tag = "5")]
    float_val: Vec<f32>,
    #[prost(double, repeated, tag = "6")]
    double_val: Vec<f64>,
}

impl TensorProto {
    /// The value of a one-element float or double tensor. Anything holding
    /// more (or fewer) values is not a point on a curve.
    fn single_value(&self) -> Option<f64> {
        if !self
            .tensor_shape
            .as_ref()
            .is_none_or(TensorShapeProto::is_one_element)
        {
            return None;
        }
        match self.dtype {
            DT_FLOAT => match (self.float_val.as_slice(), self.tensor_content.as_slice()) {
                ([v], []) => Some(f64::from(*v)),
                ([], content) => {
                    let bytes: [u8; 4] = content.try_into().ok()?;
                    Some(f64::from(f32::from_le_bytes(bytes)))
                }
                _ => None,
            },
            DT_DOUBLE => match (self.double_val.as_slice(), self.tensor_content.as_slice()) {
                ([v], []) => Some(*v),
                ([], content) => {
                    let bytes: [u8; 8] = content.try_into().ok()?;
                    Some(f64::from_le_bytes(bytes))
                }
                _ => None,
            },
            _ => None,
        }
    }
}

/// `tensorflow.TensorShapeProto`. No dims means rank 0.
#[derive(Clone, PartialEq, prost::Message)]
struct TensorShapeProto {
    #[prost(message, repeated, tag = "2")]
    dim: Vec<TensorShapeDim>,
    #[prost(bool, tag = "3")]
    unknown_rank: bool,
}

impl TensorShapeProto {
    /// Rank 0 or all dimensions 1 (`[1]`, `[1, 1]`): one value either way.
    fn is_one_element(&self) -> bool {
        !self.unknown_rank && self.dim.iter().all(|d| d.size == 1)
    }
}

/// `tensorflow.TensorShapeProto.Dim`.
#[derive(Clone, PartialEq, prost::Message)]
struct TensorShapeDim {
    #[prost(int64, tag = "1")]
    size: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message;

    /// Frames `data` as a TFRecord, as the writers do.
    fn frame(data: &[u8]) -> Vec<u8> {
        let len = (data.len() as u64).to_le_bytes();
        let mut out = Vec::new();
        out.extend_from_slice(&len);
        out.extend_from_slice(&masked_crc(&len).to_le_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(&masked_crc(data).to_le_bytes());
        out
    }

    /// Test-only superset of `Event` and `Summary.Value`, so the tests can
    /// write the fields the parser must skip (file_version, histograms).
    #[derive(Clone, PartialEq, prost::Message)]
    struct FullEvent {
        #[prost(double, tag = "1")]
        wall_time: f64,
        #[prost(int64, tag = "2")]
        step: i64,
        #[prost(string, optional, tag = "3")]
        file_version: Option<String>,
        #[prost(message, optional, tag = "5")]
        summary: Option<FullSummary>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct FullSummary {
        #[prost(message, repeated, tag = "1")]
        value: Vec<FullValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct FullValue {
        #[prost(string, tag = "1")]
        tag: String,
        #[prost(float, optional, tag = "2")]
        simple_value: Option<f32>,
        /// A HistogramProto's bytes, opaque to the test.
        #[prost(bytes = "vec", optional, tag = "5")]
        histo: Option<Vec<u8>>,
        #[prost(message, optional, tag = "8")]
        tensor: Option<TensorProto>,
        #[prost(message, optional, tag = "9")]
        metadata: Option<SummaryMetadata>,
    }

    fn event(step: i64, wall_time: f64, values: Vec<FullValue>) -> Vec<u8> {
        frame(
            &FullEvent {
                wall_time,
                step,
                file_version: None,
                summary: Some(FullSummary { value: values }),
            }
            .encode_to_vec(),
        )
    }

    fn version_header() -> Vec<u8> {
        frame(
            &FullEvent {
                wall_time: 1.0,
                step: 0,
                file_version: Some("brain.Event:2".to_string()),
                summary: None,
            }
            .encode_to_vec(),
        )
    }

    fn simple(tag: &str, v: f32) -> FullValue {
        FullValue {
            tag: tag.to_string(),
            simple_value: Some(v),
            ..Default::default()
        }
    }

    fn scalars_plugin() -> Option<SummaryMetadata> {
        Some(SummaryMetadata {
            plugin_data: Some(PluginData {
                plugin_name: b"scalars".to_vec(),
            }),
        })
    }

    fn tensor_value(
        tag: &str,
        tensor: TensorProto,
        metadata: Option<SummaryMetadata>,
    ) -> FullValue {
        FullValue {
            tag: tag.to_string(),
            tensor: Some(tensor),
            metadata,
            ..Default::default()
        }
    }

    fn scalar(tag: &str, step: i64, wall_time: f64, value: f64) -> Scalar {
        Scalar {
            tag: tag.to_string(),
            step,
            wall_time,
            value,
        }
    }

    fn read_all(bytes: &[u8]) -> Vec<Scalar> {
        match read_records(bytes, 0) {
            Ok((scalars, consumed)) => {
                assert_eq!(consumed, bytes.len());
                scalars
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    #[test]
    fn masked_crc_matches_tensorflow() {
        // From TensorFlow's crc32c tests: crc32c("a") == 0xc1d04330.
        let crc: u32 = 0xc1d0_4330;
        assert_eq!(
            masked_crc(b"a"),
            crc.rotate_right(15).wrapping_add(0xa282_ead8)
        );
        assert_eq!(crc32c::crc32c(b"a"), crc);
    }

    #[test]
    fn reads_simple_values_and_skips_the_rest() {
        let mut file = version_header();
        file.extend(event(
            0,
            10.5,
            vec![simple("loss", 1.0), simple("acc", 0.0)],
        ));
        file.extend(event(
            1,
            11.5,
            vec![
                FullValue {
                    tag: "weights".to_string(),
                    histo: Some(vec![9, 0, 0, 0, 0, 0, 0, 240, 63]),
                    ..Default::default()
                },
                simple("loss", 0.5),
            ],
        ));
        assert_eq!(
            read_all(&file),
            vec![
                scalar("loss", 0, 10.5, 1.0),
                scalar("acc", 0, 10.5, 0.0),
                scalar("loss", 1, 11.5, 0.5),
            ]
        );
    }

    #[test]
    fn reads_tensor_scalars() {
        let float = TensorProto {
            dtype: DT_FLOAT,
            float_val: vec![0.25],
            ..Default::default()
        };
        let double = TensorProto {
            dtype: DT_DOUBLE,
            double_val: vec![0.1],
            ..Default::default()
        };
        let content_f = TensorProto {
            dtype: DT_FLOAT,
            tensor_content: 1.5f32.to_le_bytes().to_vec(),
            tensor_shape: Some(TensorShapeProto::default()),
            ..Default::default()
        };
        let content_d = TensorProto {
            dtype: DT_DOUBLE,
            tensor_content: 2.5f64.to_le_bytes().to_vec(),
            tensor_shape: Some(TensorShapeProto {
                dim: vec![TensorShapeDim { size: 1 }],
                unknown_rank: false,
            }),
            ..Default::default()
        };
        let file = event(
            7,
            3.0,
            vec![
                tensor_value("f", float.clone(), scalars_plugin()),
                tensor_value("d", double, scalars_plugin()),
                tensor_value("cf", content_f, scalars_plugin()),
                tensor_value("cd", content_d, scalars_plugin()),
                // TF2 writes the plugin name only with a tag's first value.
                tensor_value("bare", float, None),
            ],
        );
        assert_eq!(
            read_all(&file),
            vec![
                scalar("f", 7, 3.0, 0.25),
                scalar("d", 7, 3.0, 0.1),
                scalar("cf", 7, 3.0, 1.5),
                scalar("cd", 7, 3.0, 2.5),
                scalar("bare", 7, 3.0, 0.25),
            ]
        );
    }

    #[test]
    fn ignores_tensors_that_are_not_scalars() {
        let text_plugin = Some(SummaryMetadata {
            plugin_data: Some(PluginData {
                plugin_name: b"text".to_vec(),
            }),
        });
        let one = TensorProto {
            dtype: DT_FLOAT,
            float_val: vec![1.0],
            ..Default::default()
        };
        let values = vec![
            tensor_value("other plugin", one.clone(), text_plugin),
            tensor_value(
                "two values",
                TensorProto {
                    float_val: vec![1.0, 2.0],
                    ..one.clone()
                },
                scalars_plugin(),
            ),
            tensor_value(
                "shape [2]",
                TensorProto {
                    tensor_shape: Some(TensorShapeProto {
                        dim: vec![TensorShapeDim { size: 2 }],
                        unknown_rank: false,
                    }),
                    ..one.clone()
                },
                scalars_plugin(),
            ),
            tensor_value(
                "int",
                TensorProto {
                    dtype: 3,
                    ..one.clone()
                },
                scalars_plugin(),
            ),
            tensor_value(
                "short content",
                TensorProto {
                    dtype: DT_DOUBLE,
                    float_val: vec![],
                    tensor_content: vec![0; 4],
                    ..one
                },
                scalars_plugin(),
            ),
            tensor_value("empty", TensorProto::default(), scalars_plugin()),
        ];
        assert_eq!(read_all(&event(1, 1.0, values)), vec![]);
    }

    #[test]
    fn truncated_record_is_not_consumed() {
        let first = event(0, 1.0, vec![simple("loss", 1.0)]);
        let second = event(1, 2.0, vec![simple("loss", 2.0)]);
        let mut file = first.clone();
        file.extend(&second);
        for cut in 0..second.len() {
            let bytes = &file[..first.len() + cut];
            let (scalars, consumed) = read_records(bytes, 100).unwrap();
            assert_eq!(consumed, first.len(), "cut at {cut}");
            assert_eq!(scalars, vec![scalar("loss", 0, 1.0, 1.0)]);
        }
        // Resuming where the first call stopped picks up the rest.
        let (scalars, consumed) = read_records(&file[first.len()..], first.len() as u64).unwrap();
        assert_eq!(consumed, second.len());
        assert_eq!(scalars, vec![scalar("loss", 1, 2.0, 2.0)]);
    }

    #[test]
    fn empty_input_consumes_nothing() {
        assert_eq!(read_records(&[], 0).unwrap(), (vec![], 0));
    }

    fn corrupt_offset(result: Result<(Vec<Scalar>, usize), MetricsError>) -> (u64, String) {
        match result {
            Err(MetricsError::Corrupt { offset, reason }) => (offset, reason),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn bad_data_crc_is_an_error() {
        let first = event(0, 1.0, vec![simple("loss", 1.0)]);
        let mut second = event(1, 2.0, vec![simple("loss", 2.0)]);
        let last = second.len() - 1;
        second[last] ^= 1;
        let mut file = first.clone();
        file.extend(&second);
        let (offset, reason) = corrupt_offset(read_records(&file, 1000));
        assert_eq!(offset, 1000 + first.len() as u64);
        assert!(reason.contains("data checksum"), "{reason}");
    }

    #[test]
    fn bad_length_crc_is_an_error() {
        let mut file = event(0, 1.0, vec![simple("loss", 1.0)]);
        file[0] ^= 1;
        // Detected as soon as the header is there, not mistaken for a
        // record still being written.
        let (offset, reason) = corrupt_offset(read_records(&file[..HEADER_LEN], 5));
        assert_eq!(offset, 5);
        assert!(reason.contains("length checksum"), "{reason}");
    }

    #[test]
    fn absurd_length_is_an_error() {
        let len = (MAX_RECORD_LEN + 1).to_le_bytes();
        let mut file = len.to_vec();
        file.extend_from_slice(&masked_crc(&len).to_le_bytes());
        let (_, reason) = corrupt_offset(read_records(&file, 0));
        assert!(reason.contains("limit"), "{reason}");
    }

    #[test]
    fn undecodable_event_is_an_error() {
        // A well-framed record whose data is a truncated varint.
        let file = frame(&[0x10, 0xff]);
        let (_, reason) = corrupt_offset(read_records(&file, 0));
        assert!(reason.contains("tensorflow.Event"), "{reason}");
    }

    fn arb_value() -> impl Strategy<Value = FullValue> {
        ("[a-z/]{0,12}", any::<f32>(), any::<bool>()).prop_map(|(tag, v, as_tensor)| {
            if as_tensor {
                tensor_value(
                    &tag,
                    TensorProto {
                        dtype: DT_FLOAT,
                        float_val: vec![v],
                        ..Default::default()
                    },
                    scalars_plugin(),
                )
            } else {
                simple(&tag, v)
            }
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512),
                                       base in any::<u64>()) {
            if let Ok((_, consumed)) = read_records(&bytes, base) {
                prop_assert!(consumed <= bytes.len());
            }
        }

        #[test]
        fn arbitrary_record_data_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            // Valid framing, so the bytes reach the protobuf decoder.
            let file = frame(&data);
            if let Ok((_, consumed)) = read_records(&file, 0) {
                prop_assert_eq!(consumed, file.len());
            }
        }

        #[test]
        fn any_prefix_stops_at_a_record_boundary(
            events in proptest::collection::vec(
                // Real wall times; prost (like any proto3 encoder) does not
                // write a -0.0, so arbitrary doubles would not round-trip.
                (any::<i64>(), 0.0f64..4e9, proptest::collection::vec(arb_value(), 0..4)), 0..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut file = Vec::new();
            let mut boundaries = vec![0];
            let mut expected = Vec::new();
            for (step, wall_time, values) in &events {
                for v in values {
                    let value = v.simple_value
                        .or_else(|| v.tensor.as_ref().and_then(|t| t.float_val.first().copied()));
                    if let Some(value) = value {
                        expected.push((boundaries.len(), v.tag.clone(), *step, *wall_time, value));
                    }
                }
                file.extend(event(*step, *wall_time, values.clone()));
                boundaries.push(file.len());
            }
            let cut = cut.index(file.len() + 1);
            let (scalars, consumed) = read_records(&file[..cut], 0).unwrap();
            let whole = boundaries.iter().filter(|&&b| b <= cut).count() - 1;
            prop_assert_eq!(consumed, boundaries[whole]);
            let expected: Vec<_> = expected.into_iter().filter(|e| e.0 <= whole).collect();
            prop_assert_eq!(scalars.len(), expected.len());
            for (got, (_, tag, step, wall_time, value)) in scalars.iter().zip(expected) {
                prop_assert_eq!(&got.tag, &tag);
                prop_assert_eq!(got.step, step);
                prop_assert_eq!(got.wall_time.to_bits(), wall_time.to_bits());
                prop_assert_eq!(got.value.to_bits(), f64::from(value).to_bits());
            }
        }
    }
}
