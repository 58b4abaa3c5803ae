import ArgumentParser
import Foundation
import Glibc
import Testing
@testable import DIOCommands
@testable import DirectIO

/// `dio bench`: option parsing, JSON shape, and short real runs on each engine.
@Suite struct BenchTests {
    @Test func byteCountsReadLikeFio() {
        #expect(ByteCount.parse("4k") == 4096)
        #expect(ByteCount.parse("1m") == 1 << 20)
        #expect(ByteCount.parse("1G") == 1 << 30)
        #expect(ByteCount.parse("2KiB") == 2048)
        #expect(ByteCount.parse("512") == 512)
        #expect(ByteCount.parse("-1") == nil)
        #expect(ByteCount.parse("k") == nil)
        #expect(ByteCount.parse("9999999999999g") == nil)
        #expect(ByteCount.format(4096) == "4k")
        #expect(ByteCount.format(1 << 20) == "1m")
        #expect(ByteCount.format(1000) == "1000")
    }

    @Test func optionsBecomeOneFioStyleJob() throws {
        let bench = try Bench.parse(["f", "--rw", "randwrite", "--bs", "16k", "--iodepth", "7", "--size", "64m", "--runtime", "2.5",
                                     "--ramp", "0.5", "--mode", "buffered", "--buffers", "unregistered", "--buffer-offset", "512",
                                     "--hugepages", "none", "--engine", "blocking", "--api", "batched", "--json", "--seed", "42"])
        let jobs = bench.workloads(sizeBytes: 64 << 20)
        #expect(jobs == [Workload(pattern: .randwrite, blockBytes: 16384, iodepth: 7, sizeBytes: 64 << 20, runtimeSeconds: 2.5, rampSeconds: 0.5,
                                  mode: .buffered, buffers: .unregistered, bufferOffset: 512, hugePages: .none, engine: .blocking, api: .batched, seed: 42)])
        #expect(jobs[0].name == "randwrite 16k qd7")
    }

    @Test func withoutRwItIsTheStandardSuite() throws {
        let bench = try Bench.parse(["--engine", "uring"])
        let jobs = bench.workloads(sizeBytes: 1 << 30)
        #expect(jobs.map(\.name) == ["randread 4k qd32", "read 1m qd8", "write 1m qd8", "read 1m qd8"])
        #expect(jobs.map(\.bufferOffset) == [0, 0, 0, 8])
        #expect(jobs.allSatisfy { $0.engine == .ioUring && $0.mode == .direct && $0.buffers == .registered })
    }

    @Test func benchAndVerifyDefaultToTheAutomaticEngine() throws {
        // `dio bench` with no --engine must run under any RLIMIT_MEMLOCK or io_uring policy
        // (the runs themselves: SystemTests.benchAndVerifyRunUnderAnyMemlockLimit).
        let jobs = try Bench.parse(["--rw", "randread"]).workloads(sizeBytes: 1 << 30)
        #expect(jobs.map(\.engine) == [.automatic])
        let verify = try Verify.parse(["/tmp/x"])
        #expect(verify.engine == .auto)
    }

    @Test func helpShowsDefaultsAsUsersTypeThem() {
        let help = Bench.helpMessage()
        #expect(help.contains("(default: 4k)"), "\(help)")
        #expect(!help.contains("ByteCount("))
        #expect(Verify.helpMessage().contains("(default: 64m)"))
    }

    @Test func everySubcommandShowsAnExample() {
        var commands: [any ParsableCommand.Type] = DIO.configuration.subcommands
        commands += LogCommand.configuration.subcommands
        for command in commands where command != LogCommand.self {
            let help = command.helpMessage()
            #expect(help.contains("Example"), "dio \(command.configuration.commandName ?? "\(command)") --help shows no example")
        }
    }

    @Test func aDirectoryIsCalledADirectory() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let result = try TestSupport.run([TestSupport.dioExecutable, "bench", directory, "--rw", "read", "--runtime", "0.1", "--ramp", "0"])
        #expect(result.status != 0)
        #expect(result.error.contains("is a directory") && result.error.contains("name a file"), "\(result.error)")
        #expect(!result.error.contains("refuses O_DIRECT"))
    }

    @Test func badOptionsAreRefusedWithTheReason() {
        #expect(throws: (any Error).self) { _ = try Bench.parse(["--rw", "sideways"]) }
        #expect(throws: (any Error).self) { _ = try Bench.parse(["--bs", "lots"]) }
        for (arguments, reason) in [(["--rw", "read", "--bs", "0"], "--bs"), (["--rw", "read", "--iodepth", "0"], "--iodepth"),
                                    (["--rw", "read", "--runtime", "0"], "--runtime"), (["--rw", "read", "--api", "async", "--engine", "blocking"], "--engine blocking"),
                                    (["--rw", "read", "--size", "1k", "--bs", "4k"], "--size"),
                                    (["--rw", "read", "--atomic"], "--atomic needs --rw write"), (["--rw", "randwrite", "--bs", "12k", "--atomic"], "power-of-two"),
                                    (["--rw", "randwrite", "--blockalign", "512", "--atomic"], "aligned blocks"), (["--rw", "write", "--api", "posix", "--atomic"], "--api batched")] {
            do {
                _ = try Bench.parse(arguments)
                Issue.record("\(arguments) was accepted")
            } catch {
                #expect(Bench.message(for: error).contains(reason), "\(arguments): \(Bench.message(for: error))")
            }
        }
    }

    @Test(arguments: [IOEngine.Choice.ioUring, .blocking])
    func aShortRealRunReportsEveryJSONKey(choice: IOEngine.Choice) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/bench.dat"
        let engine = choice == .ioUring ? "uring" : "blocking"
        let result = try TestSupport.runDioNeedingRings(["bench", path, "--rw", "randrw", "--bs", "4k", "--iodepth", "8",
                                          "--size", "16m", "--runtime", "0.3", "--ramp", "0.1", "--engine", engine, "--json"])
        #expect(result.status == 0, "\(result.error)")
        let lines = result.output.split(separator: "\n")
        #expect(lines.count == 1)
        let json = try TestSupport.json(String(lines.first ?? ""))
        #expect(json["rw"] as? String == "randrw")
        #expect(json["bs"] as? Int == 4096)
        #expect(json["iodepth"] as? Int == 8)
        #expect(json["engine"] as? String == (choice == .ioUring ? "io_uring" : "blocking"))
        #expect(json["api"] as? String == "batched")
        let ios = try #require(json["ios"] as? Int)
        #expect(ios > 0)
        #expect((json["iops"] as? Double ?? 0) > 0)
        #expect((json["bytesPerSecond"] as? Double ?? 0) > 0)
        #expect(json["bytesDirect"] as? Int == ios * 4096)
        #expect(json["bytesBounced"] as? Int == 0)
        let latency = try #require(json["latencyNs"] as? [String: Any])
        let p50 = try #require(latency["p50"] as? Int), p99 = try #require(latency["p99"] as? Int), p999 = try #require(latency["p999"] as? Int)
        #expect(0 < p50 && p50 <= p99 && p99 <= p999)
        let cpu = try #require(json["cpu"] as? [String: Any])
        #expect(cpu["user"] is Double && cpu["system"] is Double)
        // The file did not exist: it was created at --size and filled with random data.
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_size == 16 << 20)
        let sample = try TestSupport.referenceRead(path, count: 1 << 20, at: 8 << 20)
        #expect(sample.filter { $0 == 0 }.count < sample.count / 100)
    }

    @Test func withoutAPathItUsesATemporaryFileAndLeavesNothingBehind() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let result = try TestSupport.run(["sh", "-c", "cd '\(directory)' && '\(TestSupport.dioExecutable)' bench --size 8m --runtime 0.2 --ramp 0 --json"])
        #expect(result.status == 0, "\(result.error)")
        let jobs = try result.output.split(separator: "\n").map { try TestSupport.json(String($0)) }
        #expect(jobs.map { $0["rw"] as? String } == ["randread", "read", "write", "read"])
        #expect(jobs.last?["bufferOffset"] as? Int == 8)
        #expect((jobs.last?["bytesShifted"] as? Int ?? 0) > 0)
        #expect(jobs.allSatisfy { ($0["ios"] as? Int ?? 0) > 0 })
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == [])
    }

    @Test func aKilledRunLeavesNoTemporaryFile() throws {
        // The temporary file loses its name as soon as it is open, so no way of ending the
        // process (Ctrl-C, SIGTERM, even SIGKILL, which no handler can catch) leaves it behind.
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: TestSupport.dioExecutable)
        process.arguments = ["bench", "--size", "8m", "--runtime", "30", "--ramp", "0", "--json"]
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Wait until the benchmark holds its (already nameless) file open.
        let fdDirectory = "/proc/\(process.processIdentifier)/fd"
        var holdsFile = false
        for _ in 0..<250 where !holdsFile {
            usleep(20_000)
            let links = (try? FileManager.default.contentsOfDirectory(atPath: fdDirectory)) ?? []
            holdsFile = links.contains { link in
                let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: fdDirectory + "/" + link)) ?? ""
                return target.contains(".dio-bench-") && target.hasSuffix("(deleted)")
            }
        }
        #expect(holdsFile, "the benchmark never opened its temporary file")
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == [])
    }

    @Test func resultsFormatAsATable() {
        let workload = Workload(pattern: .randread)
        let result = BenchResult(workload: workload, engine: .ioUring, ios: 1000, bytes: 4_096_000, seconds: 2, latencyP50Ns: 1500,
                                 latencyP99Ns: 3000, latencyP999Ns: 9000, cpuUserSeconds: 0.01, cpuSystemSeconds: 0.02,
                                 bytesDirect: 4_096_000, bytesBounced: 0, bytesShifted: 0, registeredBuffers: true, notes: [])
        #expect(result.iops == 500)
        #expect(result.cpuMicrosecondsPerIO == 30)
        let table = BenchResult.table([result])
        #expect(table.contains("randread 4k qd32"))
        #expect(table.contains("500"))
        #expect(table.contains("1.5"))
        #expect(BenchResult.format(3.14159, digits: 2) == "3.14")
        #expect(BenchResult.format(0.05, digits: 1) == "0.1")
    }

    @Test(arguments: ["async", "async-executor", "async-scoped"])
    func theAsyncAPIsRunTheSameJob(api: String) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/bench.dat"
        let result = try TestSupport.run([TestSupport.dioExecutable, "bench", path, "--rw", "randrw", "--bs", "4k", "--iodepth", "16",
                                          "--size", "16m", "--runtime", "0.3", "--ramp", "0.1", "--api", api, "--json"])
        #expect(result.status == 0, "\(result.error)")
        let json = try TestSupport.json(result.output)
        #expect(json["api"] as? String == api)
        let ios = try #require(json["ios"] as? Int)
        #expect(ios > 0)
        #expect(json["bytesDirect"] as? Int == ios * 4096)
        let latency = try #require(json["latencyNs"] as? [String: Any])
        #expect((latency["p50"] as? Int ?? 0) > 0)
    }

    @Test func theAsyncJobRunsWithTheRingsAsTheGlobalExecutor() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/bench.dat"
        let result = try TestSupport.run([TestSupport.dioExecutable, "bench", path, "--rw", "randrw", "--bs", "4k", "--iodepth", "16",
                                          "--size", "16m", "--runtime", "0.3", "--ramp", "0.1", "--api", "async", "--global-executor", "rings", "--json"])
        #expect(result.status == 0, "\(result.error)")
        let json = try TestSupport.json(result.output)
        let ios = try #require(json["ios"] as? Int)
        #expect(ios > 0 && json["bytesDirect"] as? Int == ios * 4096)
        #expect((json["notes"] as? [String])?.contains { $0.contains("installed as Swift's global executor") } == true, "\(result.output)")
        let refused = try TestSupport.run([TestSupport.dioExecutable, "bench", path, "--rw", "randread", "--api", "batched", "--global-executor", "rings"])
        #expect(refused.status != 0 && refused.error.contains("--global-executor rings runs the tasks of --api async"), "\(refused.error)")
    }

    @Test func unalignedJobOptionsParseAsFiosDo() throws {
        let job = try #require(try Bench.parse(["--rw", "write", "--bsrange", "1-9000", "--bs-unaligned", "--fdatasync", "64", "--api", "sync", "--iodepth", "1"])
            .workloads(sizeBytes: 1 << 30).first)
        #expect(job.sizeRange == 1...9000 && job.unalignedSizes && job.fdatasyncEvery == 64 && job.api == .sync)
        #expect(job.name == "write 1-9000 qd1 sync 64")
        let aligned = try #require(try Bench.parse(["--rw", "randwrite", "--bs", "4000", "--blockalign", "1", "--api", "posix", "--iodepth", "1"])
            .workloads(sizeBytes: 1 << 30).first)
        #expect(aligned.blockAlign == 1 && aligned.name == "randwrite 4000 qd1 align 1")
        // The async APIs take unaligned jobs and misaligned memory too.
        #expect(throws: Never.self) { try Bench.parse(["--rw", "randwrite", "--bs", "4000", "--blockalign", "1", "--api", "async-executor", "--buffer-offset", "8", "--fdatasync", "4"]) }
        for (arguments, reason) in [(["--rw", "write", "--fdatasync", "4"], "--fdatasync needs --api sync, posix or async"),
                                    (["--rw", "randread", "--api", "sync", "--iodepth", "300"], "at most 256"),
                                    (["--rw", "write", "--bsrange", "9-1", "--api", "sync", "--iodepth", "1"], "bsrange"),
                                    (["--rw", "write", "--bs-unaligned", "--api", "sync", "--iodepth", "1"], "--bs-unaligned needs --bsrange")] {
            do {
                _ = try Bench.parse(arguments)
                Issue.record("\(arguments) was accepted")
            } catch {
                #expect(Bench.message(for: error).contains(reason), "\(arguments): \(Bench.message(for: error))")
            }
        }
    }

    @Test(arguments: ["sync", "posix"])
    func unalignedSyncAndPosixJobsRun(api: String) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/bench.dat"
        for extra in [["--rw", "randwrite", "--bs", "4000", "--blockalign", "1"], ["--rw", "randread", "--bs", "100", "--blockalign", "1"],
                      ["--rw", "write", "--bsrange", "1-9000", "--bs-unaligned", "--fdatasync", "64"]] {
            let result = try TestSupport.run([TestSupport.dioExecutable, "bench", path, "--size", "16m", "--runtime", "0.3", "--ramp", "0.1",
                                              "--iodepth", extra.contains("randwrite") ? "8" : "1", "--api", api, "--json"] + extra)
            #expect(result.status == 0, "\(extra): \(result.error)")
            let json = try TestSupport.json(result.output)
            let ios = try #require(json["ios"] as? Int)
            #expect(ios > 0, "\(extra)")
            if api == "sync" {
                // DirectIO realigned these requests: some of their bytes went through bounce buffers.
                #expect((json["bytesBounced"] as? Int ?? 0) > 0, "\(extra)")
            }
        }
    }
}
