import PropertyBased
import Testing
@testable import DirectIO

/// `InlineList` against `Array` as the model: the same elements in the same order through
/// appends and in-place changes, on both sides of its inline capacity.
@Suite struct InlineListTests {
    @Test func behavesLikeAnArrayOnBothSidesOfItsCapacity() async {
        await propertyCheck(count: 500, input: Gen.int(in: -1000...1000).array(of: 0...9), Gen.int(in: 0...20)) { values, changes in
            var list = InlineList<3, Int>()
            var model: [Int] = []
            for value in values {
                list.append(value)
                model.append(value)
                #expect(list.count == model.count)
            }
            #expect(Array(list) == model)
            #expect(list == InlineList(model))
            guard !model.isEmpty else { return }
            for change in 0..<changes {
                let index = change * 7 % model.count
                list[index] += change
                model[index] += change
            }
            #expect(Array(list) == model)
            #expect(list.last == model.last && list.first == model.first)
        }
    }

    @Test func equalityComparesElementsNotStorage() {
        let short: InlineList<2, Int> = [1, 2]
        let spilled: InlineList<2, Int> = [1, 2, 3]
        #expect(short != spilled)
        #expect(spilled == InlineList([1, 2, 3]))
        #expect(InlineList<2, Int>(single: 5) == [5])
        #expect(InlineList<2, Int>().isEmpty)
    }
}
