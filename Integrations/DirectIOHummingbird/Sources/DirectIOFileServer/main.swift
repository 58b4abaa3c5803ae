import ArgumentParser
import DirectIO
import DirectIOHummingbird
import DirectIOServiceLifecycle
import Hummingbird
import Logging

/// Serves a folder over HTTP with DirectIO's provider or Hummingbird's own `LocalFileSystem`,
/// for side-by-side measurement (scripts/compare-serve.sh).
@main
struct FileServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "directio-file-server",
        abstract: "Serve the files under a folder over HTTP.",
        discussion: "Example: directio-file-server --root /srv/files --port 8080 --provider directio")

    enum Provider: String, ExpressibleByArgument, CaseIterable {
        case directio, local
    }

    @Option(help: "The folder whose files are served.")
    var root: String

    @Option(help: "The port to listen on (127.0.0.1).")
    var port: Int = 8080

    @Option(help: "directio (O_DIRECT reads into pinned pool buffers) or local (Hummingbird's LocalFileSystem: buffered reads on NIO's thread pool).")
    var provider: Provider = .directio

    @Option(help: "directio: KiB per read.")
    var chunkKib: Int = 256

    @Option(help: "directio: reads in flight or waiting for the socket, per response.")
    var readAhead: Int = 8

    func run() async throws {
        var logger = Logger(label: "directio-file-server")
        logger.logLevel = .info
        let router = Router()
        // The runtime is one of the application's services: the HTTP server stops first on
        // SIGTERM/SIGINT, then the runtime waits for the reads still in flight.
        let runtime = try IORuntime()
        switch provider {
        case .directio:
            router.add(middleware: FileMiddleware(fileProvider: try await DirectIOFileProvider(rootFolder: root, runtime: runtime, chunkBytes: chunkKib << 10, readAhead: readAhead, logger: logger)))
        case .local:
            router.add(middleware: FileMiddleware(root, logger: logger))
        }
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)),
                              services: [IORuntimeService(runtime, logger: logger)], logger: logger)
        try await app.runService()
    }
}
