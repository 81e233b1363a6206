//! gzip on every core: the layer tar is cut into [`CHUNK`]-byte pieces, each compressed on a
//! worker thread into a gzip member of its own, and the members written in order.
//!
//! RFC 1952 allows a file of several members, and every gzip reader a layer meets reads them
//! as one stream (Go's `compress/gzip`, which containerd, docker, podman and skopeo use; zlib's
//! `gunzip`; flate2's `MultiGzDecoder`, which kiln uses), as they do pigz's and bgzip's output.
//! The same tar always gives the same bytes: the cut points depend only on the input. Each
//! member starts without the previous one's 32 KiB window, which costs well under 1% of size
//! at this chunk size. At most [`IN_FLIGHT_PER_THREAD`] chunks per worker are held, so memory
//! stays a few MiB whatever the layer's size.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// The uncompressed bytes of one member.
const CHUNK: usize = 1 << 20;
/// Chunks queued or being compressed, per worker, before `write` waits for one to be done.
const IN_FLIGHT_PER_THREAD: u64 = 2;

type Job = (u64, Vec<u8>);
type Done = (u64, io::Result<Vec<u8>>);

/// A `Write` that gzips into `W` on `threads` worker threads; [`ParallelGzip::finish`] returns
/// `W` once every member is written. Dropped unfinished (an error elsewhere), it closes the job
/// channel and the workers end on their own.
pub struct ParallelGzip<W: Write> {
    out: W,
    chunk: Vec<u8>,
    /// Sequence number of the next chunk sent, and of the next member to write.
    sent: u64,
    written: u64,
    max_in_flight: u64,
    /// Members that came back before their turn.
    ready: BTreeMap<u64, io::Result<Vec<u8>>>,
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
}

/// One member: `data` gzipped at `level`.
fn member(data: &[u8], level: u32) -> io::Result<Vec<u8>> {
    let mut gz =
        flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 2 + 64), flate2::Compression::new(level));
    gz.write_all(data)?;
    gz.finish()
}

impl<W: Write> ParallelGzip<W> {
    /// Starts `threads` workers (at least one) compressing at `level` into `out`.
    pub fn new(out: W, level: u32, threads: usize) -> io::Result<ParallelGzip<W>> {
        let threads = threads.max(1);
        let max_in_flight = threads as u64 * IN_FLIGHT_PER_THREAD;
        let (jobs, job_rx) = sync_channel::<Job>(threads * IN_FLIGHT_PER_THREAD as usize);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done) = sync_channel::<Done>(threads * IN_FLIGHT_PER_THREAD as usize);
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let (job_rx, done_tx) = (Arc::clone(&job_rx), done_tx.clone());
            let worker = std::thread::Builder::new().name(format!("gzip-{i}")).spawn(move || {
                loop {
                    // The lock is held only to take a job; a closed channel ends the worker.
                    let job = job_rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    let Ok((seq, data)) = job else { return };
                    if done_tx.send((seq, member(&data, level))).is_err() {
                        return;
                    }
                }
            })?;
            workers.push(worker);
        }
        Ok(ParallelGzip {
            out,
            chunk: Vec::with_capacity(CHUNK),
            sent: 0,
            written: 0,
            max_in_flight,
            ready: BTreeMap::new(),
            jobs: Some(jobs),
            done,
            workers,
        })
    }

    /// Hands the current chunk to the workers, first waiting while too many are in flight.
    fn submit(&mut self) -> io::Result<()> {
        while self.sent - self.written >= self.max_in_flight {
            self.wait_for_one()?;
        }
        let data = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
        let jobs = self.jobs.as_ref().ok_or_else(|| io::Error::other("gzip: already finished"))?;
        jobs.send((self.sent, data)).map_err(|_| io::Error::other("gzip: the compression workers stopped"))?;
        self.sent += 1;
        // Write whatever is done already, without waiting.
        while let Ok((seq, member)) = self.done.try_recv() {
            self.ready.insert(seq, member);
        }
        self.write_ready()
    }

    /// Waits for one member, then writes every member whose turn has come.
    fn wait_for_one(&mut self) -> io::Result<()> {
        let (seq, member) = self.done.recv().map_err(|_| io::Error::other("gzip: a compression worker died"))?;
        self.ready.insert(seq, member);
        self.write_ready()
    }

    fn write_ready(&mut self) -> io::Result<()> {
        while let Some(member) = self.ready.remove(&self.written) {
            self.out.write_all(&member?)?;
            self.written += 1;
        }
        Ok(())
    }

    /// Compresses what is left, writes every member in order and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        // An empty input still makes one (empty) member: a valid gzip file.
        if !self.chunk.is_empty() || self.sent == 0 {
            self.submit()?;
        }
        self.jobs = None;
        while self.written < self.sent {
            self.wait_for_one()?;
        }
        for worker in self.workers.drain(..) {
            worker.join().map_err(|_| io::Error::other("gzip: a compression worker panicked"))?;
        }
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(CHUNK - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..n]);
        if self.chunk.len() == CHUNK {
            self.submit()?;
        }
        Ok(n)
    }

    /// Members are written as they are done; a partial chunk waits for more input or `finish`.
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn members_come_out_in_order_and_decode_to_the_input() {
        // Several chunks and a partial one, written in odd-sized pieces.
        let data: Vec<u8> = (0..(3 * CHUNK + 12345)).map(|i| (i * 7 % 251) as u8).collect();
        for threads in [1, 2, 4] {
            let mut gz = ParallelGzip::new(Vec::new(), 6, threads).unwrap();
            for piece in data.chunks(70_001) {
                gz.write_all(piece).unwrap();
            }
            let out = gz.finish().unwrap();
            assert_eq!(gunzip(&out), data, "{threads} threads");
            // The same input gives the same bytes, whatever the number of workers.
            let mut again = ParallelGzip::new(Vec::new(), 6, 3).unwrap();
            again.write_all(&data).unwrap();
            assert_eq!(again.finish().unwrap(), out);
        }
    }

    #[test]
    fn an_empty_input_is_one_empty_member() {
        let out = ParallelGzip::new(Vec::new(), 6, 2).unwrap().finish().unwrap();
        assert_eq!(&out[..2], &[0x1f, 0x8b]);
        assert!(gunzip(&out).is_empty());
    }
}
