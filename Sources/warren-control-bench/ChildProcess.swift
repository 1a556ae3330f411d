// The benchmark's processes: the parent starts a server child and client children (this program again, with
// --server-child or --client-child) and steers them with one line per command on their stdin; each answers with
// one line on its stdout. A child exits when its stdin closes (the parent is done, or died).

import Foundation
import Synchronization

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the machine (arrival times cross processes).
func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// A child process and its command line protocol (the parent's side).
final class ChildProcess: @unchecked Sendable {
    let process = Process()
    private let input = Pipe(), output = Pipe()
    private var buffered = [UInt8]()
    /// One command at a time per child.
    private let lock = NSLock()
    let name: String

    /// `wrapper`: a command that runs the child (a profiler: `heaptrack -o /tmp/server`), nil: the child itself.
    init(name: String, arguments: [String], wrapper: String? = nil) throws {
        self.name = name
        let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        if let wrapper, !wrapper.isEmpty {
            let words = wrapper.split(separator: " ").map(String.init)
            process.executableURL = URL(fileURLWithPath: words[0])
            process.arguments = Array(words.dropFirst()) + [me.path] + arguments
        } else {
            process.executableURL = me
            process.arguments = arguments
        }
        process.standardInput = input
        process.standardOutput = output
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }

    /// The next line the child writes (blocking); nil when it closed its output.
    func readLine() -> String? {
        while true {
            if let newline = buffered.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffered[..<newline], as: UTF8.self)
                buffered.removeSubrange(...newline)
                return line
            }
            let data = output.fileHandleForReading.availableData
            if data.isEmpty { return nil }
            buffered += data
        }
    }

    /// Sends a command and waits for its one-line answer (on a thread of its own: the read blocks).
    func ask(_ command: String) async -> String {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                self.lock.lock()
                defer { self.lock.unlock() }
                self.input.fileHandleForWriting.write(Data((command + "\n").utf8))
                guard let line = self.readLine() else { fail("\(self.name) exited (command: \(command))") }
                if line.hasPrefix("error") { fail("\(self.name): \(line)") }
                continuation.resume(returning: line)
            }
        }
    }

    /// Sends a command that has no answer.
    func send(_ command: String) {
        input.fileHandleForWriting.write(Data((command + "\n").utf8))
    }

    /// Closes its stdin (it exits) and waits for it.
    func finish() {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }
}

/// The child's side: each line on stdin goes to `handle`, which returns the answer; stdin's end exits.
func serveCommands(_ handle: @escaping @Sendable (String) async -> String) async -> Never {
    let lines = AsyncStream<String> { continuation in
        Thread.detachNewThread {
            while let line = Swift.readLine() { continuation.yield(line) }
            continuation.finish()
        }
    }
    for await line in lines {
        let answer = await handle(line)
        FileHandle.standardOutput.write(Data((answer.replacingOccurrences(of: "\n", with: " ") + "\n").utf8))
    }
    exit(0)
}

/// What glibc's allocator holds: bytes in live allocations, and bytes it keeps free (both are in the RSS once touched).
/// From malloc_info's totals (mallinfo is not in Swift's Glibc module).
func heapFigures() -> (inUse: Int, free: Int, system: Int) {
    typealias MallocInfo = @convention(c) (Int32, UnsafeMutablePointer<FILE>?) -> Int32
    guard let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, "malloc_info") else { return (0, 0, 0) }
    let info = unsafeBitCast(symbol, to: MallocInfo.self)
    var buffer: UnsafeMutablePointer<CChar>?
    var size = 0
    guard let file = open_memstream(&buffer, &size) else { return (0, 0, 0) }
    _ = info(0, file)
    fclose(file)
    guard let buffer else { return (0, 0, 0) }
    defer { free(buffer) }
    let xml = String(cString: buffer)
    // The process-wide totals come last: <total type="fast|rest|mmap" count=".." size=".."/> and <system type="current" size="..">.
    var fast = 0, rest = 0, mmap = 0, current = 0
    func sizeField(_ line: Substring) -> Int {
        guard let r = line.range(of: "size=\"") else { return 0 }
        return Int(line[r.upperBound...].prefix { $0.isNumber }) ?? 0
    }
    let lines = xml.split(separator: "\n")
    // Only the lines after the last </heap> are the totals.
    let start = (lines.lastIndex { $0.contains("</heap>") }).map { $0 + 1 } ?? 0
    for line in lines[start...] {
        if line.contains("<total type=\"fast\"") { fast = sizeField(line) }
        if line.contains("<total type=\"rest\"") { rest = sizeField(line) }
        if line.contains("<total type=\"mmap\"") { mmap = sizeField(line) }
        if line.contains("<system type=\"current\"") { current = sizeField(line) }
    }
    return (current - fast - rest + mmap, fast + rest, current + mmap)
}

/// Gives glibc's free memory back to the system (malloc_trim(0)); for a second RSS figure, not for the first.
func trimHeap() {
    typealias MallocTrim = @convention(c) (Int) -> Int32
    guard let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, "malloc_trim") else { return }
    _ = unsafeBitCast(symbol, to: MallocTrim.self)(0)
}
