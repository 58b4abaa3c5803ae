/// A list that keeps its first `capacity` elements inline and only the rest in an array.
///
/// A realigned transfer's plan is made of lists (device I/Os, their pieces, bounce copies,
/// edge blocks, block locks), but almost every request has the same small shape: one device
/// I/O of at most three pieces with at most two edge blocks. Sized for that shape, the lists
/// of such a plan never touch the heap, which the request path would otherwise pay for about
/// ten times per request.
package struct InlineList<let capacity: Int, Element> {
    private var head: InlineArray<capacity, Element?>
    private var rest: [Element] = []
    package private(set) var count = 0

    package init() {
        head = InlineArray(repeating: nil)
    }

    /// A list of one element (an array literal would build an array first).
    package init(single element: Element) {
        self.init()
        append(element)
    }

    package init(_ elements: some Sequence<Element>) {
        self.init()
        for element in elements { append(element) }
    }

    package mutating func append(_ element: Element) {
        if count < capacity {
            head[count] = element
        } else {
            rest.append(element)
        }
        count += 1
    }
}

extension InlineList: RandomAccessCollection, MutableCollection {
    package var startIndex: Int { 0 }
    package var endIndex: Int { count }

    package subscript(position: Int) -> Element {
        get {
            precondition(position >= 0 && position < count, "InlineList index \(position) out of range 0..<\(count)")
            // Every inline slot below `count` holds an element (set by `append`, never cleared).
            return position < capacity ? head[position].unsafelyUnwrapped : rest[position - capacity]
        }
        set {
            precondition(position >= 0 && position < count, "InlineList index \(position) out of range 0..<\(count)")
            if position < capacity {
                head[position] = newValue
            } else {
                rest[position - capacity] = newValue
            }
        }
    }
}

extension InlineList: ExpressibleByArrayLiteral {
    package init(arrayLiteral elements: Element...) {
        self.init(elements)
    }
}

extension InlineList: Equatable where Element: Equatable {
    package static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.elementsEqual(rhs)
    }
}

extension InlineList: Sendable where Element: Sendable {}

extension InlineList: CustomStringConvertible {
    package var description: String { Array(self).description }
}
