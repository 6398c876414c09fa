//! A gRPC client that sends any bytes as messages (each framed as gRPC frames them, so the
//! server decodes what it is given), and the seeded draws that make those bytes.

use fleetshift_testkit::draw::Draw;
use prost::bytes::{Buf, BufMut};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::Bytes;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// Up to `most` random bytes.
pub fn bytes(draw: &mut Draw, most: u64) -> Vec<u8> {
    let length = draw.below(most + 1);
    (0..length)
        .map(|_| draw.next_u64().to_le_bytes()[0])
        .collect()
}

/// Up to `most` random characters, some outside ASCII.
pub fn text(draw: &mut Draw, most: u64) -> String {
    let length = draw.below(most + 1);
    (0..length)
        .map(|_| char::from_u32(u32::try_from(draw.below(0x800)).unwrap_or(0)).unwrap_or('?'))
        .collect()
}

/// `bytes` with one to four of them changed, or cut short, or with bytes appended.
pub fn mutated(draw: &mut Draw, bytes: &[u8]) -> Vec<u8> {
    let mut mutated = bytes.to_vec();
    match draw.below(3) {
        0 if !mutated.is_empty() => {
            for _ in 0..=draw.below(4) {
                let at = draw.index(mutated.len());
                mutated[at] ^= draw.next_u64().to_le_bytes()[0] | 1;
            }
        }
        1 => mutated.truncate(draw.index(mutated.len() + 1)),
        _ => mutated.extend(self::bytes(draw, 64)),
    }
    mutated
}

/// Calls on one channel with raw messages.
pub struct RawCall {
    channel: Channel,
}

impl RawCall {
    pub fn new(channel: Channel) -> Self {
        Self { channel }
    }

    /// Sends `frames` to `path` as a stream (then closes it) and reads every answer to the
    /// end: the answers' bytes, or the status the call ended with.
    pub async fn call(
        &self,
        path: &'static str,
        frames: Vec<Vec<u8>>,
    ) -> Result<Vec<Bytes>, Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?;
        let request = tonic::Request::new(tokio_stream::iter(frames));
        let mut answers = grpc
            .streaming(request, PathAndQuery::from_static(path), RawCodec)
            .await?
            .into_inner();
        let mut read = Vec::new();
        while let Some(answer) = answers.message().await? {
            read.push(answer);
        }
        Ok(read)
    }
}

/// Bytes out as they are, bytes in as they came.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buffer: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buffer.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buffer: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buffer.copy_to_bytes(buffer.remaining())))
    }
}
