import DirectIO
import Logging
import ServiceLifecycle

/// An `IORuntime` as a swift-service-lifecycle `Service`: `run()` lasts until the group shuts
/// down gracefully, then waits for every I/O in flight to finish before the rings stop; if the
/// task is cancelled instead, in-flight I/O is cancelled (its callers get `CancellationError`,
/// or their real outcome when the kernel finished first). Either way no buffer is released
/// while the kernel may use it, and I/O started afterwards fails with `.cancelled`.
///
/// A service group shuts its services down in reverse order: list the runtime before the
/// services that do I/O on it, so they stop first and the runtime drains what they left.
///
///     let runtime = try IORuntime()
///     let app = Application(router: router)
///     let group = ServiceGroup(services: [IORuntimeService(runtime), app], gracefulShutdownSignals: [.sigterm], logger: logger)
///     try await group.run()
public struct IORuntimeService: Service {
    public let runtime: IORuntime
    let logger: Logger

    public init(_ runtime: IORuntime, logger: Logger = Logger(label: "DirectIO.IORuntime")) {
        self.runtime = runtime
        self.logger = logger
    }

    public func run() async throws {
        logger.info("I/O runtime running", metadata: ["directio.rings": "\(runtime.ringCount)", "directio.io_uring": "\(runtime.usesIOUring)"])
        do {
            try await gracefulShutdown()
        } catch {
            logger.info("I/O runtime cancelled: cancelling the I/O in flight")
            await runtime.shutdown(cancellingInFlight: true)
            throw error
        }
        logger.info("I/O runtime shutting down: waiting for the I/O in flight")
        await runtime.shutdown()
    }
}
