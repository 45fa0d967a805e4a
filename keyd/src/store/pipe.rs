//! The plaintext pipe between the store's JSON serialiser and age's encryptor:
//! [`serialize_through_pipe`] is its one entry point, and the thread it may start stays inside
//! it.

use std::io::Write;

use serde::Serialize;
use zeroize::{Zeroize as _, Zeroizing};

/// Plaintext on its way to the encryptor, in buffers of 64 KiB that never grow (so no
/// reallocation leaves a copy behind in freed memory) and are zeroized before reuse and when
/// dropped. serde_json writes many small pieces; they become few large writes. A store larger
/// than one buffer is serialised here while a second thread encrypts and writes the buffers
/// already full; at most three buffers exist.
// The encryptor's thread is justified by bench/scale.py's rotate and no-change apply at
// 10,000 secrets (docs/benchmarks.md), where encryption and the file's writes are about a
// third of a store write.
struct PlainPipe<'scope, W: Write + Send + 'scope> {
    buf: Zeroizing<Vec<u8>>,
    encryptor: Encryptor<'scope, W>,
}

/// Where the encryptor (the writer behind the pipe) is.
enum Encryptor<'scope, W> {
    /// On this thread: every buffer so far fitted, nothing was handed on.
    OnThisThread(W),
    /// On a thread of its own: full buffers go to it, emptied ones come back.
    OnItsThread {
        full: std::sync::mpsc::SyncSender<Zeroizing<Vec<u8>>>,
        empty: std::sync::mpsc::Receiver<Zeroizing<Vec<u8>>>,
        thread: std::thread::ScopedJoinHandle<'scope, std::io::Result<W>>,
    },
    /// Taken: only while the encryptor moves to its thread, and after `finish`.
    Taken,
}

impl<'scope, W: Write + Send + 'scope> PlainPipe<'scope, W> {
    const CAPACITY: usize = 64 * 1024;

    fn new(inner: W) -> Self {
        Self {
            buf: Self::buffer(),
            encryptor: Encryptor::OnThisThread(inner),
        }
    }

    fn buffer() -> Zeroizing<Vec<u8>> {
        Zeroizing::new(Vec::with_capacity(Self::CAPACITY))
    }

    /// Hands the full buffer on (starting the encryptor's thread in `scope` the first time)
    /// and takes an empty one.
    fn drain<'env>(
        &mut self,
        scope: &'scope std::thread::Scope<'scope, 'env>,
    ) -> std::io::Result<()> {
        if matches!(self.encryptor, Encryptor::OnThisThread(_))
            && let Encryptor::OnThisThread(mut inner) =
                std::mem::replace(&mut self.encryptor, Encryptor::Taken)
        {
            let (full, full_rx) = std::sync::mpsc::sync_channel::<Zeroizing<Vec<u8>>>(1);
            let (empty_tx, empty) = std::sync::mpsc::channel();
            let thread = scope.spawn(move || {
                for mut buf in full_rx {
                    inner.write_all(&buf)?;
                    buf.zeroize();
                    // This side may have finished with an error and gone: nothing to return to.
                    let _ = empty_tx.send(buf);
                }
                Ok(inner)
            });
            self.encryptor = Encryptor::OnItsThread {
                full,
                empty,
                thread,
            };
        }
        let Encryptor::OnItsThread { full, empty, .. } = &self.encryptor else {
            return Err(std::io::Error::other("the store's encryptor stopped"));
        };
        let next = empty.try_recv().unwrap_or_else(|_| Self::buffer());
        let buf = std::mem::replace(&mut self.buf, next);
        if full.send(buf).is_err() {
            // The thread stopped on a write error: finish() returns it.
            return Err(std::io::Error::other("the store's encryptor stopped"));
        }
        Ok(())
    }

    /// Writes what is left and returns the encryptor, or the first write error.
    fn finish(mut self) -> std::io::Result<W> {
        match std::mem::replace(&mut self.encryptor, Encryptor::Taken) {
            Encryptor::OnThisThread(mut inner) => {
                inner.write_all(&self.buf)?;
                Ok(inner)
            }
            Encryptor::OnItsThread { full, thread, .. } => {
                let last = std::mem::replace(&mut self.buf, Zeroizing::new(Vec::new()));
                // A failed send means the thread stopped; its error is what the join returns.
                let _ = full.send(last);
                drop(full);
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }
            Encryptor::Taken => Err(std::io::Error::other("the store's encryptor stopped")),
        }
    }
}

/// Serialises `value` as JSON into `inner` through a [`PlainPipe`], and returns `inner` once
/// every byte has reached it. A write error of `inner` is returned rather than what the
/// serialiser made of it.
pub(super) fn serialize_through_pipe<W: Write + Send, T: Serialize + ?Sized>(
    inner: W,
    value: &T,
) -> std::io::Result<W> {
    std::thread::scope(|scope| {
        let mut pipe = PlainPipe::new(inner);
        let written = serde_json::to_writer(
            PipeWriter {
                pipe: &mut pipe,
                scope,
            },
            value,
        );
        let inner = pipe.finish()?;
        written.map_err(std::io::Error::other).map(|()| inner)
    })
}

/// [`PlainPipe`] as a writer: the scope its encryptor's thread runs in, beside it.
struct PipeWriter<'p, 'scope, 'env, W: Write + Send + 'scope> {
    pipe: &'p mut PlainPipe<'scope, W>,
    scope: &'scope std::thread::Scope<'scope, 'env>,
}

impl<W: Write + Send> Write for PipeWriter<'_, '_, '_, W> {
    #[inline]
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.write_all(data).map(|()| data.len())
    }

    #[inline]
    fn write_all(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        let cap = PlainPipe::<W>::CAPACITY;
        loop {
            let room = cap - self.pipe.buf.len();
            if data.len() <= room {
                self.pipe.buf.extend_from_slice(data);
                return Ok(());
            }
            self.pipe.buf.extend_from_slice(&data[..room]);
            data = &data[room..];
            self.pipe.drain(self.scope)?;
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes bytes until `limit`, then fails every write.
    struct Failing {
        taken: Vec<u8>,
        limit: usize,
    }

    impl Write for Failing {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            if self.taken.len() + data.len() > self.limit {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "disk full",
                ));
            }
            self.taken.extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_plaintext_pipe_delivers_every_byte_in_order_small_or_large() {
        for size in [0usize, 10, 64 * 1024, 64 * 1024 + 1, 700_001] {
            // Strings of many lengths, with characters JSON escapes: serde_json writes them in
            // pieces of every size, one longer than a buffer among them.
            let mut values = Vec::new();
            let (mut total, mut len) = (0, 1);
            while total < size {
                let n = len.min(size - total);
                values.push(
                    (0..n)
                        .map(|i| ['a', '"', 'é', '\n'][i % 4])
                        .collect::<String>(),
                );
                total += n;
                len = (len * 3 + 1) % 90_000;
            }
            let out = serialize_through_pipe(Vec::new(), &values).unwrap();
            let expected = serde_json::to_vec(&values).unwrap();
            assert!(out == expected, "size {size}: {} bytes out", out.len());
        }
    }

    #[test]
    fn a_write_error_behind_the_plaintext_pipe_is_returned_not_hung_on() {
        let big = vec!["x".repeat(1000); 2000];
        for limit in [0, 100_000, 1_000_000] {
            let err = serialize_through_pipe(
                Failing {
                    taken: Vec::new(),
                    limit,
                },
                &big,
            )
            .map(|f| f.taken.len())
            .unwrap_err();
            assert_eq!(
                err.kind(),
                std::io::ErrorKind::StorageFull,
                "limit {limit}: {err}"
            );
        }
    }

    #[test]
    fn an_error_of_the_serialiser_is_returned_after_the_pipe_is_emptied() {
        /// Writes 200 KB, then fails.
        struct FailsAfterWriting;
        impl Serialize for FailsAfterWriting {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::{Error as _, SerializeSeq as _};
                let mut seq = s.serialize_seq(None)?;
                seq.serialize_element(&"x".repeat(200_000))?;
                Err(S::Error::custom("serialisation failed"))
            }
        }
        let err = serialize_through_pipe(Vec::new(), &FailsAfterWriting).unwrap_err();
        assert_eq!(err.to_string(), "serialisation failed");
    }
}
