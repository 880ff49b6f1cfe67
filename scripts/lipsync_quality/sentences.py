"""The benchmark's sentences: conversation, news, names and numbers, dense in p/b/m, f/v, o/u and i/e."""

from __future__ import annotations

ENGLISH = (
    "Bob and Mom moved the blue boots to the back porch.",
    "Maybe we could meet at five past seven for a movie?",
    "Please put the purple map by the phone before Monday.",
    "The museum opened a new exhibit of Persian poems in February.",
    "Prime Minister Boris Palmer met members of parliament on Thursday.",
    "Fifty-five people voted for the proposal, and forty-four voted against it.",
    "Fresh fruit, feta cheese, and warm pita bread are on the menu.",
    "Vivian moved from Bombay to Vienna in nineteen ninety-five.",
    "Your flight to Boston leaves from gate twenty-two at nine fifteen.",
    "We will review the budget with Peter and Maria after lunch.",
    "Food prices rose by four percent in the first few months of the year.",
    "Who knew the moon could look so blue over the pool?",
    "Mike bought a big bag of beans, peas, and sweet potatoes.",
    "The team from Madrid won the final by three goals to one.",
    "Please remember to feed the puppy before you leave for school.",
    "Doctor Evans will move the meeting to the fourth floor.",
    "Fifteen boats were found near the beach after the storm.",
    "Mary and Tom plan to visit me in my home town in May.",
    "The European bank may cut interest rates by half a point.",
    "Every evening, my brother plays the violin for our family.",
    "Good morning! How may I help you with your booking today?",
    "My phone number is five five five, nine one two, three four.",
)

PERSIAN = (
    "بابا و مامان با هم به باغ می‌روند.",
    "سلام، امروز صبح با برادرم به موزه رفتیم.",
    "فردا ساعت پنج بعد از ظهر با مریم در میدان فردوسی قرار داریم.",
    "بیمارستان مرکزی شهر امروز پذیرای بیماران بیشتری بود.",
    "قیمت میوه و سبزی در ماه گذشته پانزده درصد بالا رفت.",
    "پدرم هر روز صبح پیاده به محل کارش می‌رود.",
    "فاطمه و فرهاد در فرودگاه مهرآباد منتظر پرواز بودند.",
    "لطفاً پیش از رفتن، پنجره‌ها را ببندید.",
    "تیم ملی فوتبال دیشب با دو گل برنده شد.",
    "من و همسرم سال نود و هشت به مشهد سفر کردیم.",
    "این کتاب را برای پسرم از بازار بزرگ خریدم.",
    "باران تا پایان هفته در بیشتر مناطق کشور می‌بارد.",
    "بهمن فرمانی، مدیر فروش شرکت، فردا به تبریز می‌رود.",
    "شماره تلفن من نهصد و دوازده، سیصد و چهل و پنج است.",
    "امروز هوا خیلی خوب است و ما با دوستان به پارک می‌رویم.",
    "دانشجویان برای امتحان ریاضی تا صبح بیدار ماندند.",
    "مادربزرگم همیشه برایم قصه‌های قدیمی می‌گوید.",
    "وزیر بهداشت از افتتاح سه بیمارستان جدید خبر داد.",
    "پنجشنبه شب مهمانی بزرگی در خانه‌ی عمو بهرام است.",
    "بوی نان تازه از نانوایی سر کوچه می‌آمد.",
    "فیلم جدید این کارگردان در جشنواره جایزه گرفت.",
    "او هر روز ورزش می‌کند و میوه‌ی فراوان می‌خورد.",
)

SENTENCES: dict[str, tuple[str, ...]] = {"en": ENGLISH, "fa": PERSIAN}
