//! The frames the driver and a Python worker exchange: a 4-byte big-endian length, then UTF-8 JSON.
//!
//! Message shapes are documented in `python/mlcompute_batch_worker.py`, which is the other end.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Larger frames are refused: a worker that sends one is treated as broken.
pub const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;

/// Why a frame could not be exchanged.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the worker closed its pipe")]
    Closed,
    #[error("pipe to or from the worker failed")]
    Io(#[source] std::io::Error),
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("frame is not the expected JSON")]
    Json(#[source] serde_json::Error),
}

impl FrameError {
    /// A bounded name for metrics and status reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Closed | Self::Io(_) => "WorkerPipe",
            Self::TooLarge(_) | Self::Json(_) => "WorkerProtocol",
        }
    }
}

/// The first frame a worker sends, after importing the script and running `init()`.
#[derive(Debug, Deserialize)]
pub struct Hello {
    pub ready: bool,
    #[serde(default)]
    pub init_ms: f64,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
}

/// One mini-batch to score.
#[derive(Debug, Serialize)]
pub struct Request<'a> {
    pub id: u64,
    pub items: &'a [String],
    /// Whether rows are wanted (`append_row`); `summary_only` drops them in the worker.
    pub rows: bool,
}

/// A failed file of a mini-batch, by its position in the request.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ItemFailure {
    pub index: usize,
    pub reason: String,
    #[serde(default)]
    pub detail: String,
}

/// The worker's answer to a [`Request`].
#[derive(Debug, Deserialize)]
pub struct Response {
    pub id: u64,
    pub rows: Vec<String>,
    pub failed: Vec<ItemFailure>,
    /// Time spent in the user's `run` (including isolation re-runs), milliseconds.
    pub run_ms: f64,
    /// Whether `run` raised for the whole mini-batch and files were re-run one by one.
    pub isolated: bool,
}

/// Encodes `message` as one frame.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let json = serde_json::to_vec(message).map_err(FrameError::Json)?;
    let len = u32::try_from(json.len()).map_err(|_| FrameError::TooLarge(json.len()))?;
    let mut frame = Vec::with_capacity(json.len() + 4);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&json);
    Ok(frame)
}

/// Writes one frame (a single write of header and payload) and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    out: &mut W,
    frame: &[u8],
) -> Result<(), FrameError> {
    out.write_all(frame).await.map_err(FrameError::Io)?;
    out.flush().await.map_err(FrameError::Io)
}

/// Reads one frame and decodes its JSON.
pub async fn read_frame<R, T>(input: &mut R) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: for<'de> Deserialize<'de>,
{
    let mut header = [0u8; 4];
    match input.read_exact(&mut header).await {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(FrameError::Closed);
        }
        Err(err) => return Err(FrameError::Io(err)),
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    let mut payload = vec![0u8; len];
    match input.read_exact(&mut payload).await {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(FrameError::Closed);
        }
        Err(err) => return Err(FrameError::Io(err)),
    }
    serde_json::from_slice(&payload).map_err(FrameError::Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_frame_round_trips() {
        let items = vec!["/in/a".to_string(), "/in/b".to_string()];
        let frame = encode(&Request {
            id: 7,
            items: &items,
            rows: true,
        })
        .unwrap();
        assert_eq!(
            u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize,
            frame.len() - 4
        );
        let mut reader = &frame[..];
        let back: serde_json::Value = read_frame(&mut reader).await.unwrap();
        assert_eq!(back["id"], 7);
        assert_eq!(back["items"][1], "/in/b");
    }

    #[tokio::test]
    async fn a_truncated_frame_is_a_closed_pipe() {
        let frame = encode(&serde_json::json!({"id": 1})).unwrap();
        let mut reader = &frame[..frame.len() - 1];
        let err = read_frame::<_, serde_json::Value>(&mut reader)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Closed));
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused() {
        let frame = u32::MAX.to_be_bytes();
        let mut reader = &frame[..];
        let err = read_frame::<_, serde_json::Value>(&mut reader)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(_)));
    }
}
